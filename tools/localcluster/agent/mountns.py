"""Container shim: give the process its own view of the filesystem, drop privileges, exec the command.

Run by the agent as ``python -I -S mountns.py run SPEC.json`` (standard library
only, so it starts in milliseconds) in a fresh session, with stdout and stderr
already pointing at the container's log file. In order it:

0. joins the pod's network namespace (``netns``, a path under /run/netns), as a container joins its
   pod's pause container; without one it stays in the host's (loopback mode);
1. unshares a mount namespace (and a UTS namespace: the hostname is the pod
   name) and makes every mount private, so nothing below reaches the host;
2. pivots into a new root: a tmpfs holding every top-level entry of the host's
   ``/`` bind-mounted back. The container sees the host's files, but new
   top-level entries (``/models``) are created in the tmpfs, not on the host;
3. bind-mounts every volume at its mountPath, parents first. A missing mount
   point is created in a private layer: the directory that would receive it is
   "shadowed" (a tmpfs with that directory's entries bound back), so even
   ``/etc/codex/spec.json`` or ``/dev/termination-log`` never touch the host.
   Mount points inside another volume are created in that volume, as the
   kubelet does. readOnly mounts are then remounted read-only;
   with ``readOnlyRootFilesystem`` every other mount is too (the host's files the container
   sees, the tmpfs root, /tmp and /dev/shm of the host), except the volumes and the pod's
   own home directory: the container can write its volumes only, as under a runtime;
4. keeps the runtime reachable: for a non-root user it shadows ancestors
   others may not traverse (``/root``, 0700, holds pyenv's Python) keeping
   only the way in, and a volume that covers a runtime path (an emptyDir at
   ``/tmp`` over a workdir in ``/tmp``) gets that path bound back inside it;
5. switches to runAsUser/runAsGroup/supplemental groups, enters workingDir and
   execs the command with SIGKILL as parent-death signal, so a dead agent
   leaves no container behind.

``enter PID SPEC.json`` joins the namespaces of a running container instead:
that is how exec probes run.

Any failure before exec is written to the ``start_error`` file and the shim
exits 128; the agent reports it as reason StartError.
"""

import ctypes
import json
import os
import re
import signal
import stat
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 8, 32, 4096, 16384
# Per-mount flags a remount must keep (mountinfo's options field -> flag).
KEPT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC}
MS_PRIVATE = 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG = 1
SYS_PIVOT_ROOT = 155  # x86_64
libc = ctypes.CDLL("libc.so.6", use_errno=True)


def _call(result, what):
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source, target, fstype, flags, data=None):
    encode = lambda s: s.encode() if s is not None else None  # noqa: E731
    _call(libc.mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data)),
          f"mount {source} on {target}")


def _bind(source, target):
    _mount(source, target, None, MS_BIND | MS_REC)


class Rootfs:
    """The container's filesystem view, built in its own mount namespace."""

    def __init__(self):
        self.private = set()  # directories whose new entries stay inside this container
        self.volumes = []  # mount targets of volumes: entries created below them land in the volume

    def _populate(self, directory, original, keep=None):
        """Fill the tmpfs at ``directory`` with bind mounts of the entries of ``original``."""
        for name in sorted(os.listdir(original)):
            if keep is not None and name not in keep:
                continue
            source, target = os.path.join(original, name), os.path.join(directory, name)
            if os.path.islink(source):
                os.symlink(os.readlink(source), target)
                continue
            if os.path.isdir(source):
                os.mkdir(target)
            else:
                open(target, "w").close()
            _bind(source, target)

    def pivot(self, new_root):
        _mount("tmpfs", new_root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
        self._populate(new_root, "/")
        os.mkdir(os.path.join(new_root, ".old-root"))
        os.chdir(new_root)
        _call(libc.syscall(SYS_PIVOT_ROOT, b".", b".old-root"), "pivot_root")
        os.chdir("/")
        _call(libc.umount2(b"/.old-root", MNT_DETACH), "umount old root")
        os.rmdir("/.old-root")
        self.private.add("/")

    def shadow(self, directory, keep=None):
        """Cover ``directory`` with a tmpfs holding its entries (or only ``keep``) bound back."""
        handle = os.open(directory, os.O_PATH | os.O_DIRECTORY)
        try:
            _mount("tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
            # /proc/self/fd still reaches the directory that the tmpfs now hides.
            self._populate(directory, f"/proc/self/fd/{handle}", keep)
        finally:
            os.close(handle)
        self.private.add(directory)

    def _writable_here(self, directory):
        return directory in self.private or any(
            directory == v or directory.startswith(v.rstrip("/") + "/") for v in self.volumes)

    def mountpoint(self, target, is_dir):
        """Make ``target`` exist with the right type without writing to the host; return its real path."""
        target = os.path.normpath(target)
        if os.path.lexists(target) and os.path.isdir(target) == is_dir:
            return target
        missing, parent = [], target
        while not os.path.lexists(parent):
            missing.insert(0, os.path.basename(parent))
            parent = os.path.dirname(parent)
        if parent == target:  # exists, but a file where a directory is wanted or the reverse
            missing, parent = [os.path.basename(target)], os.path.dirname(target)
        parent = os.path.realpath(parent)
        if not self._writable_here(parent):
            self.shadow(parent)
        path = os.path.join(parent, missing[0])
        if os.path.lexists(path):  # the wrong-typed entry, bound back into the shadow: replace it
            libc.umount2(path.encode(), MNT_DETACH)
            os.rmdir(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
        for index, name in enumerate(missing):
            path = os.path.join(parent, *missing[:index + 1])
            if index == len(missing) - 1 and not is_dir:
                open(path, "w").close()
            else:
                os.mkdir(path)
                self.private.add(path)
        return path

    def bind_volumes(self, mounts):
        # Open every source first: a volume at /tmp would otherwise hide sources in a workdir under /tmp.
        sources = [(os.open(m["source"], os.O_PATH), os.path.isdir(m["source"])) for m in mounts]
        for mount, (handle, is_dir) in zip(mounts, sources):
            target = self.mountpoint(mount["target"], is_dir)
            _bind(f"/proc/self/fd/{handle}", target)
            os.close(handle)
            self.volumes.append(target)
            mount["resolved"] = target

    def seal_read_only(self, mounts):
        for mount in mounts:
            if mount["read_only"]:
                _mount(None, mount["resolved"], None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)

    def seal_root(self, keep):
        """readOnlyRootFilesystem: remount read-only every mount but the volumes and ``keep`` (each
        first bound onto itself, so that it is a mount of its own that stays writable)."""
        for path in keep:
            _bind(path, path)
        writable = [*self.volumes, *keep]
        for point, options in _mounts():
            if any(point == w or point.startswith(w.rstrip("/") + "/") for w in writable):
                continue
            flags = MS_BIND | MS_REMOUNT | MS_RDONLY
            for option in options:
                flags |= KEPT_FLAGS.get(option, 0)
            _mount(None, point, None, flags)

    def restore(self, handles):
        """Bind back runtime paths that a volume covered (an emptyDir at /tmp hides a workdir under /tmp)."""
        for path, handle in sorted(handles.items()):
            if any(path == v or path.startswith(v.rstrip("/") + "/") for v in self.volumes):
                _bind(f"/proc/self/fd/{handle}", self.mountpoint(path, True))
            os.close(handle)

    def expose(self, paths):
        """Let a non-root user reach ``paths``: shadow each untraversable ancestor, keeping only the way in."""
        keep = {}
        for path in paths:
            current = "/"
            for part in path.strip("/").split("/")[:-1]:
                child = os.path.join(current, part)
                if not os.stat(current).st_mode & stat.S_IXOTH:
                    keep.setdefault(current, set()).add(part)
                current = child
            if current != "/" and not os.stat(current).st_mode & stat.S_IXOTH:
                keep.setdefault(current, set()).add(os.path.basename(path))
        for directory in sorted(keep, key=len):
            self.shadow(directory, keep[directory])


def _mounts():
    """(mount point, per-mount options) of every mount in this namespace, from /proc/self/mountinfo."""
    out = []
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields = line.split()
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])  # "\040" is a space
            out.append((point, fields[5].split(",")))
    return out


def _drop_privileges(spec):
    os.setgroups(spec["groups"])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])


def _die_with_agent(agent_pid):
    # Changing credentials clears the parent-death signal: set it (again) afterwards.
    _call(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != agent_pid:
        raise RuntimeError("the node agent exited while the container was starting")


def _resolve(command, path_var):
    if "/" in command:
        return command
    for directory in path_var.split(":"):
        candidate = os.path.join(directory or ".", command)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(f'exec: "{command}": executable file not found in $PATH')


def _exec(spec):
    os.chdir(spec["cwd"])
    argv = spec["argv"]
    os.execve(_resolve(argv[0], spec["env"].get("PATH", "")), argv, spec["env"])


def _join_network(path):
    handle = os.open(path, os.O_RDONLY)
    try:
        _call(libc.setns(handle, CLONE_NEWNET), f"setns into the pod's network namespace {path}")
    finally:
        os.close(handle)


def run(spec):
    _die_with_agent(spec["agent_pid"])
    if spec.get("netns"):
        _join_network(spec["netns"])
    _call(libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    hostname = spec["hostname"].encode()[:64]
    _call(libc.sethostname(hostname, len(hostname)), "sethostname")
    rootfs = Rootfs()
    rootfs.pivot(spec["rootfs"])
    runtime = [p for p in spec["runtime_paths"] if os.path.isdir(p)]
    if spec["uid"] != 0:
        rootfs.expose(runtime)
    handles = {path: os.open(path, os.O_PATH | os.O_DIRECTORY) for path in runtime}
    rootfs.bind_volumes(spec["mounts"])
    rootfs.restore(handles)
    rootfs.seal_read_only(spec["mounts"])
    rootfs.mountpoint(spec["cwd"], True)
    if spec.get("read_only_root"):
        rootfs.seal_root([spec["home"]])
    _drop_privileges(spec)
    _die_with_agent(spec["agent_pid"])
    _exec(spec)


def enter(pid, spec):
    for kind, flag in (("net", CLONE_NEWNET), ("mnt", CLONE_NEWNS), ("uts", CLONE_NEWUTS)):
        handle = os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY)
        _call(libc.setns(handle, flag), f"setns {kind} of pid {pid}")
        os.close(handle)
    _drop_privileges(spec)
    _die_with_agent(spec["agent_pid"])
    _exec(spec)


def main():
    mode, spec_path = sys.argv[1], sys.argv[-1]
    with open(spec_path) as handle:
        spec = json.load(handle)
    # Opened now: after pivot_root the host path may no longer be reachable.
    error_file = open(spec["start_error"], "w") if spec.get("start_error") else None
    try:
        if mode == "run":
            run(spec)
        else:
            enter(int(sys.argv[2]), spec)
    except Exception as err:  # noqa: BLE001 - every failure becomes the container's StartError
        message = str(err) if isinstance(err, (OSError, RuntimeError)) else f"{type(err).__name__}: {err}"
        if error_file:
            error_file.write(message)
            error_file.flush()
        print(f"localcluster: cannot start container: {message}", file=sys.stderr)
        sys.exit(128)


if __name__ == "__main__":
    main()
