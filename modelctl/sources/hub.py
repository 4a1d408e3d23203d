"""The Hugging Face Hub's API, the little of it a pull needs: a repository's files with their sizes and LFS sha256 at
its current revision, the resolve URL of a file, and the token header.

Spoken over modelctl's own HTTP client: ``GET {endpoint}/api/models/{repo}?blobs=true`` is the request
huggingface_hub's ``model_info(files_metadata=True)`` makes, and ``{endpoint}/{repo}/resolve/{revision}/{path}``
the URL its ``hf_hub_url`` builds. Importing huggingface_hub took ~0.6 s of every ``hf.co`` pull, more than a
present model's whole pull should (issue 16). The Hub's refusals map to modelctl's typed errors: 401/403 (private,
gated or unknown to an anonymous caller) to ``AuthError``, 404 to ``NotFound``, 5xx and 429 to a temporary
``RegistryError``, no answer to "cannot reach the Hugging Face Hub" (exit 7).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from modelctl.config import Config
from modelctl.errors import AuthError, IntegrityError, ModelctlError, NotFound, RegistryError
from modelctl.hf_files import HubFile
from modelctl.reference import HUGGING_FACE, Reference

if TYPE_CHECKING:
    import httpx

DEFAULT_ENDPOINT = "https://huggingface.co"
MAX_LISTING = 64 << 20
"""Bytes a repository listing may have (a few KiB per hundred files)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Listing:
    """What the Hub says about a repository at its current revision."""

    repo_id: str
    revision: str
    last_modified: datetime | None
    files: tuple[HubFile, ...]


def endpoint(config: Config) -> str:
    return (config.hf_endpoint or DEFAULT_ENDPOINT).rstrip("/")


def auth_headers(config: Config) -> dict[str, str]:
    """``Authorization`` for the Hub when there is a token (HF_TOKEN); the client drops it on a redirect to the CDN."""
    return {"Authorization": f"Bearer {config.hf_token}"} if config.hf_token else {}


def resolve_url(config: Config, repo_id: str, revision: str, path: str) -> str:
    return f"{endpoint(config)}/{repo_id}/resolve/{quote(revision, safe='')}/{quote(path)}"


def listing(config: Config, client: httpx.Client, ref: Reference) -> Listing:
    """The repository's files with sizes and LFS sha256 (one API call; no file is read)."""
    from modelctl.oci import safejson, transport

    base = endpoint(config)
    url = f"{base}/api/models/{ref.repository}"
    request = client.build_request("GET", url, params={"blobs": "true"}, headers=auth_headers(config))
    try:
        response = transport.send(client, request)
    except RegistryError as exc:
        if exc.status is not None or not exc.temporary:  # an answer, or a TLS failure with its own hint
            raise
        raise RegistryError(
            f"cannot reach the Hugging Face Hub at {base}",
            temporary=True,
            hint="check the network, HTTPS_PROXY or HF_ENDPOINT",
        ) from None
    try:
        if response.status_code != 200:
            raise _refusal(response, config, ref)
        body = transport.read_bounded(response, MAX_LISTING, what=f"the listing of {ref.repository}")
    finally:
        response.close()
    hint = "check that HF_ENDPOINT points at a Hugging Face Hub"
    doc = safejson.loads(body, what=f"listing of {ref.repository} from {base}", max_size=MAX_LISTING, hint=hint)
    return _parse(doc, ref, base)


def _parse(doc: Any, ref: Reference, base: str) -> Listing:
    hint = "check that HF_ENDPOINT points at a Hugging Face Hub"
    revision = doc.get("sha") if isinstance(doc, dict) else None
    if not isinstance(revision, str) or not revision:
        raise RegistryError(f"{base} gave no revision for {ref.repository}", hint=hint)
    siblings = doc.get("siblings")
    if not isinstance(siblings, list):
        raise IntegrityError(f"malformed listing of {ref.repository} from {base}: no file list", hint=hint)
    files = []
    for sibling in siblings:
        path = sibling.get("rfilename") if isinstance(sibling, dict) else None
        if not isinstance(path, str):
            raise IntegrityError(f"malformed listing of {ref.repository} from {base}: a file without a name", hint=hint)
        lfs = sibling.get("lfs")
        lfs = lfs if isinstance(lfs, dict) else {}
        size = _int(sibling.get("size"))
        sha = lfs.get("sha256")
        files.append(
            HubFile(
                path=path,
                size=size if size is not None else _int(lfs.get("size")),
                sha256=sha if isinstance(sha, str) else None,
            )
        )
    return Listing(
        repo_id=ref.repository, revision=revision, last_modified=_when(doc.get("lastModified")), files=tuple(files)
    )


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _when(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _refusal(response: httpx.Response, config: Config, ref: Reference) -> ModelctlError:
    """The typed error for a listing the Hub refused (never echoing the token)."""
    status = response.status_code
    code = response.headers.get("X-Error-Code", "")
    repo = f"{HUGGING_FACE}/{ref.repository}"
    token_hint = "check that HF_TOKEN can read it" if config.hf_token else "set HF_TOKEN to a token that can read it"
    if code == "GatedRepo":
        return AuthError(f"{repo} is a gated repository", hint=f"accept its terms on the Hub and {token_hint}")
    if status in (401, 403):
        return AuthError(
            f"the Hub refused access to {repo} (HTTP {status})",
            hint=f"it is private or gated (or does not exist): {token_hint}",
        )
    if status == 404 and code == "RevisionNotFound":
        return NotFound(f"{repo}: revision not found", hint="check the repository on the Hub")
    if status == 404:
        return NotFound(f"{repo} was not found on {endpoint(config)}", hint="check the name on the Hub")
    return RegistryError(
        f"the Hub answered HTTP {status} for {repo}",
        status=status,
        temporary=status >= 500 or status == 429,
        hint="try again later",
    )
