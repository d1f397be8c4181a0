"""Materialise a pod's volumes as host directories, and the bind mounts a container gets from them.

configMap, secret, downwardAPI and projected volumes are written like the
kubelet's atomic writer: the files live in a timestamped ``..<stamp>`` directory,
``..data`` points at it, and each top-level key is a symlink through ``..data``,
so a refresh (of a ServiceAccount token, say) swaps every file at once.
"""

from __future__ import annotations

import base64
import os
import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from .env import ConfigError, expand, field_value, resource_value

DEFAULT_FILE_MODE = 0o644
DEFAULT_TOKEN_SECONDS = 3600
DEFAULT_TERMINATION_LOG = "/dev/termination-log"


class VolumeError(Exception):
    """A volume cannot be set up (yet): the pod stays ContainerCreating with a FailedMount event."""


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool = False


def _relative(path: str, what: str) -> PurePosixPath:
    rel = PurePosixPath(path)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise VolumeError(f"{what}: path {path!r} must be relative and must not contain '..'")
    return rel


def write_atomic(target: Path, files: dict[str, tuple[bytes, int]]) -> None:
    """Replace the contents of ``target`` with ``files`` ({relative path: (data, mode)}) in one rename."""
    target.mkdir(parents=True, exist_ok=True)
    stamp = target / f"..{datetime.now(timezone.utc).strftime('%Y_%m_%d_%H_%M_%S.%f')}"
    stamp.mkdir(mode=0o755)
    for rel, (data, mode) in files.items():
        path = stamp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(mode)
    link = target / "..data_tmp"
    link.unlink(missing_ok=True)
    link.symlink_to(stamp.name)
    old = os.readlink(target / "..data") if (target / "..data").is_symlink() else None
    os.replace(link, target / "..data")
    tops = {PurePosixPath(rel).parts[0] for rel in files}
    for top in tops:
        if not (target / top).is_symlink():
            (target / top).symlink_to(f"..data/{top}")
    for entry in target.iterdir():
        if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in tops:
            entry.unlink()
    if old and old != stamp.name:
        shutil.rmtree(target / old, ignore_errors=True)


def apply_fs_group(path: Path, gid: int, writable: bool) -> None:
    """The kubelet's fsGroup ownership: group ``gid``, group-readable (and writable, setgid dirs if rw)."""
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files, None]:
            entry = Path(root) / name if name else Path(root)
            if entry.is_symlink():
                continue
            os.chown(entry, -1, gid)
            mode = entry.stat().st_mode
            if entry.is_dir():
                entry.chmod(mode | (0o2070 if writable else 0o2050))
            else:
                entry.chmod(mode | (0o060 if writable else 0o040))


class PodVolumes:
    """The host side of every volume of one pod."""

    def __init__(self, kube, pod: dict, pod_path: Path, allocatable: dict):
        self.kube = kube
        self.pod = pod
        self.namespace = pod["metadata"]["namespace"]
        self.root = pod_path / "volumes"
        self.allocatable = allocatable
        self.paths: dict[str, Path] = {}
        self.refresh_at: dict[str, float] = {}  # projected volumes holding tokens -> monotonic renewal time
        security = pod["spec"].get("securityContext") or {}
        self.fs_group = security.get("fsGroup")

    # ----- setup -------------------------------------------------------------------------------
    def setup(self) -> None:
        for volume in self.pod["spec"].get("volumes") or []:
            if volume["name"] not in self.paths:
                self.paths[volume["name"]] = self._setup_one(volume)

    def refresh_due(self) -> float | None:
        return min(self.refresh_at.values(), default=None)

    def refresh(self) -> None:
        """Re-issue tokens (and re-read sources) of projected volumes that are due."""
        now = time.monotonic()
        for volume in self.pod["spec"].get("volumes") or []:
            if self.refresh_at.get(volume["name"], float("inf")) <= now:
                self.refresh_at[volume["name"]] = now + 10.0  # retried in 10 s if this attempt fails
                self._setup_one(volume)

    def _setup_one(self, volume: dict) -> Path:
        name = volume["name"]
        target = self.root / name
        try:
            if "emptyDir" in volume:
                target.mkdir(parents=True, exist_ok=True)
                target.chmod(0o777)
            elif "persistentVolumeClaim" in volume:
                return self._claim_path(volume["persistentVolumeClaim"]["claimName"])
            elif "hostPath" in volume:
                return self._host_path(volume["hostPath"])
            elif "configMap" in volume or "secret" in volume or "downwardAPI" in volume or "projected" in volume:
                write_atomic(target, self._files(volume, name))
            else:
                kinds = sorted(set(volume) - {"name"})
                raise VolumeError(f"volume type {', '.join(kinds)} is not supported by the local node")
        except ConfigError as err:
            raise VolumeError(str(err)) from err
        if self.fs_group is not None:
            apply_fs_group(target, int(self.fs_group), writable="emptyDir" in volume)
        return target

    def _claim_path(self, claim_name: str) -> Path:
        claim = self.kube.pvc(self.namespace, claim_name)
        if claim is None:
            raise VolumeError(f'persistentvolumeclaim "{claim_name}" not found')
        volume_name = claim["spec"].get("volumeName")
        if claim.get("status", {}).get("phase") != "Bound" or not volume_name:
            raise VolumeError(f'persistentvolumeclaim "{claim_name}" is not bound')
        pv = self.kube.pv(volume_name) or {}
        path = ((pv.get("spec") or {}).get("hostPath") or (pv.get("spec") or {}).get("local") or {}).get("path")
        if not path:
            raise VolumeError(f"persistentvolume {volume_name} has no hostPath/local path the local node can use")
        Path(path).mkdir(parents=True, exist_ok=True)
        return Path(path)

    def _host_path(self, source: dict) -> Path:
        path = Path(source["path"])
        kind = source.get("type") or ""
        if kind == "DirectoryOrCreate":
            path.mkdir(parents=True, exist_ok=True)
        elif kind == "FileOrCreate" and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        elif kind in ("Directory", "File") and not path.exists():
            raise VolumeError(f"hostPath {path} does not exist")
        return path

    # ----- file contents -------------------------------------------------------------------------
    def _files(self, volume: dict, name: str) -> dict[str, tuple[bytes, int]]:
        if "projected" in volume:
            projected = volume["projected"]
            default_mode = projected.get("defaultMode", DEFAULT_FILE_MODE)
            files: dict[str, tuple[bytes, int]] = {}
            for source in projected.get("sources") or []:
                files.update(self._source_files(source, default_mode, name))
            return files
        key = next(k for k in ("configMap", "secret", "downwardAPI") if k in volume)
        source = dict(volume[key])
        if key == "secret":
            source["name"] = source.pop("secretName", None)
        return self._source_files({key: source}, volume[key].get("defaultMode", DEFAULT_FILE_MODE), name)

    def _source_files(self, source: dict, default_mode: int, volume: str) -> dict[str, tuple[bytes, int]]:
        if "configMap" in source or "secret" in source:
            kind = "configMap" if "configMap" in source else "secret"
            return self._object_files(kind, source[kind], default_mode, volume)
        if "downwardAPI" in source:
            return self._downward_files(source["downwardAPI"].get("items") or [], default_mode, volume)
        if "serviceAccountToken" in source:
            return self._token_file(source["serviceAccountToken"], default_mode, volume)
        raise VolumeError(f"volume {volume}: projected source {sorted(source)} is not supported by the local node")

    def _object_files(self, kind: str, ref: dict, default_mode: int, volume: str) -> dict[str, tuple[bytes, int]]:
        obj = (self.kube.configmap if kind == "configMap" else self.kube.secret)(self.namespace, ref["name"])
        label = "configmap" if kind == "configMap" else "secret"
        if obj is None:
            if ref.get("optional"):
                return {}
            raise VolumeError(f'{label} "{ref["name"]}" not found')
        data: dict[str, bytes] = {}
        if kind == "secret":
            data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        else:
            data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
            data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        items = ref.get("items")
        if not items:
            return {k: (v, default_mode) for k, v in data.items()}
        files = {}
        for item in items:
            if item["key"] not in data:
                if ref.get("optional"):
                    continue
                raise VolumeError(f"{label} references non-existent {label.replace('map', '')} key: {item['key']}")
            rel = str(_relative(item["path"], f"volume {volume}"))
            files[rel] = (data[item["key"]], item.get("mode", default_mode))
        return files

    def _downward_files(self, items: list[dict], default_mode: int, volume: str) -> dict[str, tuple[bytes, int]]:
        files = {}
        for item in items:
            rel = str(_relative(item["path"], f"volume {volume}"))
            if "fieldRef" in item:
                value = field_value(self.pod, item["fieldRef"]["fieldPath"])
            else:
                value = resource_value(self.pod, item["resourceFieldRef"], None, self.allocatable)
            files[rel] = (value.encode(), item.get("mode", default_mode))
        return files

    def _token_file(self, source: dict, default_mode: int, volume: str) -> dict[str, tuple[bytes, int]]:
        account = self.pod["spec"].get("serviceAccountName") or "default"
        seconds = int(source.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS)
        try:
            token, expires = self.kube.request_token(self.namespace, account, self.pod, source.get("audience"),
                                                      seconds)
        except Exception as err:  # noqa: BLE001 - any refusal is reported as a mount failure
            raise VolumeError(f"failed to fetch token for serviceaccount {account}: {getattr(err, 'body', err)}")
        lifetime = (datetime.strptime(expires, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
                    - datetime.now(timezone.utc)).total_seconds()
        # The kubelet renews at 80% of the lifetime, and at least daily.
        self.refresh_at[volume] = time.monotonic() + max(10.0, min(0.8 * lifetime, 86400.0))
        rel = str(_relative(source["path"], f"volume {volume}"))
        return {rel: (token.encode(), default_mode)}

    # ----- mounts ----------------------------------------------------------------------------------
    def mounts(self, container: dict, env: dict[str, str], termination_log: Path) -> list[Mount]:
        """The bind mounts of one container, parents before children (the order mounts must happen in)."""
        mounts = []
        for mount in container.get("volumeMounts") or []:
            if mount["name"] not in self.paths:
                raise ConfigError(f"volumeMount {mount['name']!r} refers to no volume of the pod")
            source = self.paths[mount["name"]]
            sub_path = mount.get("subPath") or expand(mount.get("subPathExpr") or "", env.get)
            if sub_path:
                source = source / _relative(sub_path, f"volumeMount {mount['name']} subPath")
                if not source.exists() and not source.is_symlink():
                    source.mkdir(parents=True, exist_ok=True)
                source = Path(os.path.realpath(source))
            mounts.append(Mount(str(source), mount["mountPath"], bool(mount.get("readOnly"))))
        target = container.get("terminationMessagePath") or DEFAULT_TERMINATION_LOG
        mounts.append(Mount(str(termination_log), target, False))
        return sorted(mounts, key=lambda m: len(PurePosixPath(m.target).parts))
