"""Publishing commands: ``package`` (GGUF files -> a model artifact), ``push``, and ``registry serve|gc``."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from modelctl.cli import render
from modelctl.cli.context import settings
from modelctl.errors import UsageError

# Services are imported inside the commands: every command module is imported at start-up to register its
# commands, and a command should load only its own machinery (`modelctl list` never imports the pull's).


def package(
    ref: list[str] = typer.Argument(..., metavar="REF...", help="Name(s) to tag the artifact with."),
    gguf: list[Path] = typer.Option(..., "--gguf", help="GGUF file; repeat for each shard, in order."),
    license_: list[Path] = typer.Option([], "--license", help="License file (repeatable)."),
    mmproj: Path | None = typer.Option(None, "--mmproj", help="Multimodal projector GGUF."),
    chat_template: Path | None = typer.Option(None, "--chat-template", help="Jinja chat template file."),
    context_size: int | None = typer.Option(None, "--context-size", min=1, help="Default context size."),
    card: Path | None = typer.Option(None, "--card", help="Model card (Markdown), attached as a referrer."),
    created: str | None = typer.Option(None, "--created", help="RFC 3339 time (default: SOURCE_DATE_EPOCH or now)."),
    format_: str = typer.Option(
        "docker",
        "--format",
        metavar="docker|modelpack|image",
        help="Docker model-spec artifact, CNCF ModelPack artifact, or OCI image with the files under /models/.",
    ),
    push_too: bool = typer.Option(False, "--push", help="Push after packaging."),
) -> None:
    """Package GGUF file(s) as a model artifact in the local store (Docker model-spec, ModelPack or an image)."""
    from modelctl import reference
    from modelctl.services.package import PackageInput
    from modelctl.services.package import package as do_package

    refs = [reference.parse(r) for r in ref]
    spec = PackageInput(
        gguf=gguf,
        license=license_,
        mmproj=mmproj,
        chat_template=chat_template,
        context_size=context_size,
        card=card,
        created=created,
        format=format_,
    )
    result = do_package(settings(), refs, spec)
    print(f"packaged {result.digest} ({render.size(result.size)}) as {', '.join(str(r) for r in refs)}")
    if push_too:
        for r in refs:
            _push_one(str(r))


def push(ref: str = typer.Argument(..., metavar="REF")) -> None:
    """Push a local model to its registry."""
    _push_one(ref)


def _push_one(ref: str, *, quiet: bool = False) -> None:
    from modelctl.cli.progress import reporter
    from modelctl.services.push import push as do_push

    out = reporter(quiet=quiet)

    def note(desc: object, outcome: str) -> None:
        if outcome != "uploaded" and not quiet:
            print(f"  {getattr(desc, 'digest', '')[7:19]}: {outcome}", file=sys.stderr)

    try:
        result = do_push(settings(), ref, on_blob=note, progress=out.progress)
    finally:
        out.close()
    print(
        f"pushed {result.reference} {result.digest} "
        f"(uploaded {result.uploaded}, mounted {result.mounted}, already there {result.skipped})"
    )


registry_app = typer.Typer(help="Run modelctl's own OCI registry.", no_args_is_help=True)


@registry_app.command("serve")
def registry_serve(
    root: Path | None = typer.Option(None, "--root", help="Storage directory [default: registry-data]."),
    store: bool = typer.Option(
        False, "--store", help="Serve this machine's store ($MODELCTL_HOME/store) read-only: pulls only."
    ),
    addr: str = typer.Option("127.0.0.1:5050", "--addr", metavar="HOST:PORT"),
    htpasswd: Path | None = typer.Option(None, "--htpasswd", help="bcrypt htpasswd file: push needs credentials."),
    proxy: str | None = typer.Option(None, "--proxy", metavar="URL", help="Pull-through cache of this upstream."),
    allow_anonymous_pull: bool = typer.Option(False, "--allow-anonymous-pull", help="With --htpasswd."),
    allow_sparse: bool = typer.Option(
        False, "--allow-sparse", help="Accept manifests whose layers were never pushed (sparse copies)."
    ),
) -> None:
    """Serve an OCI Distribution v1.1 registry (push, pull, referrers, pull-through cache, or a store read-only)."""
    import registry

    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"bad --addr {addr!r}", hint="use HOST:PORT, e.g. 127.0.0.1:5050")
    if store and (root is not None or proxy is not None or allow_sparse):
        raise UsageError(
            "--store serves this machine's store as it is", hint="leave out --root, --proxy and --allow-sparse"
        )
    registry.serve(
        root=root,
        store=settings().store_dir if store else None,
        host=host.strip("[]") or "127.0.0.1",
        port=int(port),
        htpasswd=htpasswd,
        proxy=proxy,
        allow_anonymous_pull=allow_anonymous_pull,
        allow_sparse=allow_sparse,
    )


@registry_app.command("gc")
def registry_gc(root: Path = typer.Option(..., "--root", help="Storage directory.")) -> None:
    """Delete blobs no manifest references."""
    import registry

    try:
        removed = registry.gc(root)
    except FileNotFoundError:
        raise UsageError(
            f"{root} is not a registry root (no blobs/)", hint="give the --root the registry serves"
        ) from None
    print(f"removed {len(removed)} blobs")


def register(app: typer.Typer) -> None:
    app.command("package")(package)
    app.command("push")(push)
    app.add_typer(registry_app, name="registry")
