"""Policy versions in the MLflow model registry, and loading them so that tampering is caught.

A version is a registration run whose artifacts are the policy directory (safetensors weights
and JSON configs, kept in S3 through the tracking server) plus tags for lineage: the dataset
manifest, the parent version, the code revision, evaluation figures, and the sha256 of every
file, signed by the learner (`registry/signing.py`). Whoever loads a version checks the signature,
downloads the files and checks each digest against the registry before a single weight is read;
an unsigned version or a mismatch is refused with `TamperedModel`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from infra.clients import mlflow_client, unavailable
from infra.errors import FleetError, UsageError
from infra.settings import Settings
from registry import signing

ALIASES = ("champion", "canary", "previous")
DIGESTS_TAG = "weights_sha256"  # JSON {file name: sha256} of the policy directory
MODEL_URI_PREFIX = "models:/"


class NoChampion(FleetError):
    """The registry has no champion: for robots to run, or for a round to improve."""


class TamperedModel(FleetError):
    """Downloaded weights do not match the digests the registry recorded for them."""


@dataclass(frozen=True)
class PolicyVersion:
    name: str
    version: str
    run_id: str
    digests: dict[str, str]
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    # Why no one may load this version, when its registry entry says so (a listing shows it
    # rather than failing on it): no digests, or digests that are not a map of file to sha256
    refused: str = ""

    @property
    def uri(self) -> str:
        return f"{MODEL_URI_PREFIX}{self.name}/{self.version}"


def file_digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def code_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


class ModelStore:
    """The registered policy model: register versions, resolve aliases, fetch verified copies."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.name = settings.registry.model_name
        self.client = mlflow_client(settings)

    def _call(self, what: str, fn, *args, **kwargs):
        """MLflow calls, with the tracking server named when it cannot be reached; errors the
        server answered with (a missing alias, a bad name) pass through as they are."""
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args, **kwargs)
        except MlflowException as e:
            who = f"as {self.settings.mlflow.username}" if self.settings.mlflow.authenticated else "without one"
            hint = "set FLEET_MLFLOW__USERNAME and FLEET_MLFLOW__PASSWORD to an MLflow user allowed this"
            if "error code 401" in e.message:
                raise UsageError(
                    f"mlflow at {self.settings.mlflow_tracking_uri} refused the login {who} ({what})", hint
                ) from e
            if "error code 403" in e.message:  # a robot's login: it may read models, not register them
                raise UsageError(
                    f"mlflow at {self.settings.mlflow_tracking_uri} does not permit {what} {who}", hint
                ) from e
            if "API request to" in e.message or "Max retries" in e.message:
                raise unavailable(self.settings, "mlflow", f"{what}: {e.message[:200]}") from e
            raise
        except (ConnectionError, OSError) as e:
            raise unavailable(self.settings, "mlflow", f"{what}: {e}") from e

    # -- writing ------------------------------------------------------------------------------
    def register(
        self, policy_dir: Path, lineage: dict[str, str] | None = None, metrics: dict[str, float] | None = None
    ) -> PolicyVersion:
        """Upload a policy directory as a new version with its digests and lineage tags."""
        digests = file_digests(policy_dir)
        tags = {
            DIGESTS_TAG: json.dumps(digests, sort_keys=True),
            "code_revision": code_revision(),
            **{k: str(v) for k, v in (lineage or {}).items()},
        }
        experiment = self._experiment_id()
        run = self._call(
            "create a registration run", self.client.create_run, experiment, tags=tags, run_name=f"register-{self.name}"
        )
        run_id = run.info.run_id
        tags[signing.SIGNATURE_TAG] = signing.sign(self.settings, self.name, run_id, digests)
        self._call("upload the policy", self.client.log_artifacts, run_id, str(policy_dir), "policy")
        for key, value in (metrics or {}).items():
            self.client.log_metric(run_id, key, float(value))
        self.client.set_terminated(run_id)
        self._ensure_registered_model()
        mv = self._call(
            "create a model version",
            self.client.create_model_version,
            self.name,
            f"runs:/{run_id}/policy",
            run_id=run_id,
            tags=tags | {f"eval.{k}": str(v) for k, v in (metrics or {}).items()},
        )
        return self.get(mv.version)

    def set_alias(self, alias: str, version: str) -> None:
        self._call(f"set alias {alias}", self.client.set_registered_model_alias, self.name, alias, version)

    def delete_alias(self, alias: str) -> None:
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):  # already absent
            self.client.delete_registered_model_alias(self.name, alias)

    def tag(self, version: str, key: str, value: str) -> None:
        self._call("tag a version", self.client.set_model_version_tag, self.name, version, key, value)

    # -- reading ------------------------------------------------------------------------------
    def get(self, version: str) -> PolicyVersion:
        mv = self._call(f"read version {version}", self.client.get_model_version, self.name, str(version))
        return self._version(mv)

    def by_alias(self, alias: str) -> PolicyVersion | None:
        from mlflow.exceptions import MlflowException

        try:
            mv = self._call(f"resolve alias {alias}", self.client.get_model_version_by_alias, self.name, alias)
        except MlflowException:
            return None
        return self._version(mv)

    def aliases(self) -> dict[str, str]:
        """alias -> version for every alias currently set on the model."""
        from mlflow.exceptions import MlflowException

        try:
            model = self._call("read the registered model", self.client.get_registered_model, self.name)
        except MlflowException:
            return {}
        return {a: str(v) for a, v in model.aliases.items()}

    def versions(self) -> list[PolicyVersion]:
        """Every version, those that can never be loaded included (`refused` says why): one
        version registered by other hands must not hide the rest from an operator."""
        found = self._call("list versions", self.client.search_model_versions, f"name='{self.name}'")
        return sorted((self._version(mv, strict=False) for mv in found), key=lambda v: int(v.version))

    def fetch(self, version: PolicyVersion) -> Path:
        """A verified local copy of the version's policy directory (downloaded once, checked always)."""
        self.check_signed(version)
        target = self.settings.model_cache_dir / self.name / version.version
        if not target.exists():
            import mlflow.artifacts

            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                got = self._call(
                    f"download version {version.version}",
                    mlflow.artifacts.download_artifacts,
                    run_id=version.run_id,
                    artifact_path="policy",
                    dst_path=tmp,
                    tracking_uri=self.settings.mlflow_tracking_uri,
                )
                try:
                    Path(got).rename(target)
                except OSError:
                    # another fetch of this version (a robot, a second agent process) got there
                    # first; its copy is verified below like ours would have been
                    if not target.is_dir():
                        raise
        self.verify(version, target)
        return target

    def check_signed(self, version: PolicyVersion) -> None:
        """The learner signed these digests for this version: tags alone are no reason to trust them."""
        signature = version.tags.get(signing.SIGNATURE_TAG, "")
        if not signing.is_signed_by_the_learner(self.settings, self.name, version.run_id, version.digests, signature):
            why = f"no {signing.SIGNATURE_TAG} tag" if not signature else "the signature does not match"
            raise TamperedModel(f"{version.uri}: its digests are not signed by the learner's key ({why}); refused")

    def verify(self, version: PolicyVersion, directory: Path) -> None:
        actual = file_digests(directory)
        if actual != version.digests:
            bad = sorted(k for k in actual.keys() | version.digests.keys() if actual.get(k) != version.digests.get(k))
            shutil.rmtree(directory, ignore_errors=True)  # never leave a bad copy for the next load
            raise TamperedModel(
                f"{version.uri}: {', '.join(bad)} do not match the sha256 recorded in the registry; refused"
            )

    def load(self, version: PolicyVersion):
        from worldmodel.policy import WorldModelPolicy

        return WorldModelPolicy.load(self.fetch(version)).eval()

    # -- internals ----------------------------------------------------------------------------
    def _version(self, mv, strict: bool = True) -> PolicyVersion:
        """The registry's entry as a version; one whose digests are missing or unreadable raises
        `TamperedModel` when `strict` (it is about to be used), else comes back marked `refused`."""
        tags = dict(mv.tags or {})
        digests, refused = _digests(tags.get(DIGESTS_TAG)), ""
        if digests is None:
            refused = f"{MODEL_URI_PREFIX}{self.name}/{mv.version} has no readable {DIGESTS_TAG} tag; refused"
            if strict:
                raise TamperedModel(refused)
        return PolicyVersion(
            self.name,
            str(mv.version),
            mv.run_id or "",
            digests or {},
            tags,
            tuple(getattr(mv, "aliases", ()) or ()),
            refused,
        )

    def _experiment_id(self) -> str:
        exp = self._call("find the experiment", self.client.get_experiment_by_name, self.settings.registry.experiment)
        if exp is not None:
            return exp.experiment_id
        return self._call("create the experiment", self.client.create_experiment, self.settings.registry.experiment)

    def _ensure_registered_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(self.name)
        except MlflowException:
            self._call("create the registered model", self.client.create_registered_model, self.name)


def _digests(tag: str | None) -> dict[str, str] | None:
    """The digests tag as {file name: sha256}, or None if it is absent or anything else."""
    try:
        digests = json.loads(tag) if tag is not None else None
    except ValueError:
        return None
    if not isinstance(digests, dict) or not all(isinstance(v, str) for v in digests.values()):
        return None
    return digests


def resolve_policy(settings: Settings, policy: str) -> Path:
    """A policy directory, or a registry URI (models:/NAME/VERSION or models:/NAME@ALIAS) fetched
    and verified into the local cache."""
    if not policy.startswith(MODEL_URI_PREFIX):
        from worldmodel.policy import WorldModelPolicy

        return WorldModelPolicy.locate(Path(policy))
    ref = policy[len(MODEL_URI_PREFIX) :]
    name, sep, alias = ref.partition("@")
    if not sep:
        name, _, version = ref.rpartition("/")
    store = ModelStore(
        settings.model_copy(update={"registry": settings.registry.model_copy(update={"model_name": name})})
    )
    found = store.by_alias(alias) if sep else store.get(version)
    if found is None:
        raise UsageError(
            f"{policy}: the registry has no {'alias ' + repr(alias) if sep else 'version ' + version} on {name}"
        )
    return store.fetch(found)
