"""Command line: ``python -m registry --root DIR|--store DIR --addr HOST:PORT ...``; ``python -m registry gc ...``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import registry
from modelctl.errors import ModelctlError


def parse_addr(addr: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[::1]:PORT`` or ``:PORT`` (all interfaces)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {addr!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["gc"]:
        gc_parser = argparse.ArgumentParser(prog="python -m registry gc", description="remove unreferenced blobs")
        gc_parser.add_argument("--root", type=Path, required=True, help="the registry's storage directory")
        gc_parser.add_argument("--grace", type=float, default=0.0, help="keep blobs younger than this (seconds)")
        gc_parser.add_argument("--dry-run", action="store_true", help="list what would be removed")
        ns = gc_parser.parse_args(args[1:])
        try:
            removed = registry.gc(ns.root, grace_seconds=ns.grace, dry_run=ns.dry_run)
        except OSError as exc:
            print(f"registry: error: {exc}", file=sys.stderr)
            return 1
        for digest in removed:
            print(digest)
        return 0
    parser = argparse.ArgumentParser(prog="python -m registry", description="serve an OCI registry")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--root", type=Path, help="storage directory (created if missing)")
    where.add_argument(
        "--store", type=Path, metavar="DIR", help="serve this modelctl store ($MODELCTL_HOME/store) read-only"
    )
    parser.add_argument("--addr", type=parse_addr, default=("127.0.0.1", 5000), help="HOST:PORT (port 0: any free)")
    parser.add_argument("--htpasswd", type=Path, help="htpasswd file with bcrypt hashes: enables Basic auth")
    parser.add_argument("--proxy", metavar="URL", help="upstream registry: run as a read-only pull-through cache")
    parser.add_argument("--allow-anonymous-pull", action="store_true", help="with --htpasswd: pulls need no login")
    parser.add_argument(
        "--tag-ttl", type=float, default=30.0, help="with --proxy: seconds an upstream tag answer is trusted"
    )
    parser.add_argument(
        "--allow-sparse",
        action="store_true",
        help="accept manifests whose blobs or child manifests were not pushed (default: MANIFEST_BLOB_UNKNOWN)",
    )
    ns = parser.parse_args(args)
    host, port = ns.addr
    try:
        registry.serve(
            root=ns.root,
            store=ns.store,
            host=host,
            port=port,
            htpasswd=ns.htpasswd,
            proxy=ns.proxy,
            allow_anonymous_pull=ns.allow_anonymous_pull,
            tag_ttl=ns.tag_ttl,
            allow_sparse=ns.allow_sparse,
        )
    except ModelctlError as exc:
        print(f"registry: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"registry: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
