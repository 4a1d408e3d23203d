"""Services: one verb each (pull, list, remove, fit, run...). They take a Config and values, never CLI objects."""
