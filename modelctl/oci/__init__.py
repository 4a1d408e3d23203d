"""OCI primitives (media types, descriptors, manifests) and the registry client."""
