"""Container shim: set up a private mount namespace, drop privileges, exec the container's command.

Run by the agent as ``python -I -S mountns.py run SPEC.json`` (standard library
only, so it starts in milliseconds) in a fresh session, with stdout and stderr
already pointing at the container's log file. In order it:

1. unshares a mount namespace (and a UTS namespace, so the hostname is the pod
   name) and makes every mount private, so nothing below leaks to the host;
2. for a non-root user, makes the agent's Python and state directory reachable
   when an ancestor directory is not (``/root`` is 0700 where pyenv lives): a
   tmpfs covers that ancestor and the needed directories are bound back;
3. bind-mounts every volume at its mountPath (parents first, mount points
   created when missing), then remounts the readOnly ones read-only;
4. switches to the pod's runAsUser/runAsGroup/supplemental groups, enters
   workingDir and execs the command, with SIGKILL as parent-death signal so a
   dead agent leaves no container behind.

``enter PID SPEC.json`` joins the namespaces of a running container instead of
creating new ones: that is how exec probes run.

On any failure before exec it writes the error to ``start_error`` (a host path
from the spec) and exits 128, which the agent reports as reason StartError.
"""

import ctypes
import json
import os
import signal
import stat
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC = 1, 2, 4, 32, 4096, 16384
MS_PRIVATE = 1 << 18
PR_SET_PDEATHSIG = 1
libc = ctypes.CDLL("libc.so.6", use_errno=True)


def _call(result, what):
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source, target, fstype, flags, data=None):
    encode = lambda s: s.encode() if s is not None else None  # noqa: E731
    _call(libc.mount(encode(source), encode(target), encode(fstype), ctypes.c_ulong(flags), encode(data)),
          f"mount {source} on {target}")


def _mountpoint(target, is_dir):
    if os.path.lexists(target):
        return
    if is_dir:
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target) or "/", exist_ok=True)
        open(target, "a").close()


def _blocked_ancestor(path):
    """The first directory on the way to ``path`` that others may not traverse, or None."""
    current = "/"
    for part in path.strip("/").split("/")[:-1]:
        current = os.path.join(current, part)
        if not os.stat(current).st_mode & stat.S_IXOTH:
            return current
    return None


def _expose(paths):
    by_ancestor = {}
    for path in paths:
        blocked = _blocked_ancestor(path)
        if blocked:
            by_ancestor.setdefault(blocked, []).append(path)
    for blocked, inner in sorted(by_ancestor.items()):
        # Hold the directories open: after the tmpfs covers them, /proc/self/fd still reaches them.
        handles = {path: os.open(path, os.O_PATH | os.O_DIRECTORY) for path in inner}
        _mount("tmpfs", blocked, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
        for path, handle in sorted(handles.items()):
            os.makedirs(path, exist_ok=True)
            _mount(f"/proc/self/fd/{handle}", path, None, MS_BIND | MS_REC)
            os.close(handle)


def _bind_volumes(mounts):
    for mount in mounts:
        _mountpoint(mount["target"], os.path.isdir(mount["source"]))
        _mount(mount["source"], mount["target"], None, MS_BIND | MS_REC)
    for mount in mounts:
        if mount["read_only"]:
            _mount(None, mount["target"], None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


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


def run(spec):
    _die_with_agent(spec["agent_pid"])
    _call(libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    hostname = spec["hostname"].encode()[:64]
    _call(libc.sethostname(hostname, len(hostname)), "sethostname")
    if spec["uid"] != 0:
        _expose(spec["expose"])
    _bind_volumes(spec["mounts"])
    os.makedirs(spec["cwd"], exist_ok=True)
    _drop_privileges(spec)
    _die_with_agent(spec["agent_pid"])
    _exec(spec)


def enter(pid, spec):
    for kind, flag in (("mnt", CLONE_NEWNS), ("uts", CLONE_NEWUTS)):
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
    try:
        if mode == "run":
            run(spec)
        else:
            enter(int(sys.argv[2]), spec)
    except Exception as err:  # noqa: BLE001 - every failure becomes the container's StartError
        message = f"{type(err).__name__}: {err}" if not isinstance(err, (OSError, RuntimeError)) else str(err)
        try:
            with open(spec["start_error"], "w") as handle:
                handle.write(message)
        except OSError:
            pass
        print(f"localcluster: cannot start container: {message}", file=sys.stderr)
        sys.exit(128)


if __name__ == "__main__":
    main()
