import Dispatch
import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Signals, waits for and reaps a job's whole process group.
///
/// A job runs as the leader of its own process group (`pgid == pid` of the first process), so one `kill(-pgid, …)`
/// reaches everything it forked unless a descendant deliberately left the group (`setsid`/`setpgid`); cgroups, not
/// process groups, are the answer to that and come with the sandbox runners.
package enum ProcessGroup {
    /// Whether any process (zombies included) is still a member of the group.
    ///
    /// `kill(-pgid, 0)` fails with `ESRCH` once the last member is reaped; `EPERM` means a member exists that we may
    /// not signal, which still counts as alive.
    package static func exists(_ pgid: Int32) -> Bool {
        guard pgid > 1 else { return false }
        if kill(-pgid, 0) == 0 { return true }
        return errno == EPERM
    }

    /// Sends `signal` to every member of the group; `false` when the group is already gone.
    @discardableResult
    package static func signal(_ pgid: Int32, _ signal: Int32) -> Bool {
        guard pgid > 1 else { return false }
        return kill(-pgid, signal) == 0
    }

    /// Terminates the whole group: `SIGTERM` (and `SIGCONT`, so stopped members see it), up to `grace` for the
    /// members to exit, then `SIGKILL`, then up to `killTimeout` for the kernel to tear them down.
    ///
    /// Polls every 50 ms and reaps members that are this process's children (see ``becomeSubreaper()``), so the
    /// group really disappears instead of lingering as zombies. The waits do not end early on task cancellation:
    /// a cancelled caller still gets a dead group.
    ///
    /// The group's leader is never reaped here, so a spawner waiting for its exit status still gets it.
    ///
    /// - Parameters:
    ///   - pgid: the group id, which is the pid of the job's first process.
    ///   - grace: how long members may take to exit after `SIGTERM`.
    ///   - killTimeout: how long to wait for the group to disappear after `SIGKILL`.
    ///   - terminatedAt: when `SIGTERM` already went to the group; the grace counts from then and it is not resent.
    /// - Returns: `true` when the group is gone, `false` when live members survived `SIGKILL` for `killTimeout`
    ///   (e.g. stuck in uninterruptible I/O).
    @discardableResult
    package static func terminate(
        _ pgid: Int32,
        grace: Duration,
        killTimeout: Duration = .seconds(10),
        terminatedAt: ContinuousClock.Instant? = nil
    ) async -> Bool {
        let clock = ContinuousClock()
        if isGone(pgid) { return true }
        if terminatedAt == nil {
            signal(pgid, SIGTERM)
            signal(pgid, SIGCONT)
        }
        let killAt = (terminatedAt ?? clock.now).advanced(by: grace)
        if await waitUntilGone(pgid, deadline: killAt, clock: clock) { return true }
        signal(pgid, SIGKILL)
        return await waitUntilGone(pgid, deadline: clock.now.advanced(by: killTimeout), clock: clock)
    }

    /// Polls until the group is gone or `deadline` passes.
    package static func waitUntilGone(
        _ pgid: Int32,
        deadline: ContinuousClock.Instant,
        clock: ContinuousClock = ContinuousClock()
    ) async -> Bool {
        while true {
            if isGone(pgid) { return true }
            if clock.now >= deadline { return false }
            await pause(.milliseconds(50))
        }
    }

    /// Reaps our exited members, then tells whether no live member remains.
    ///
    /// Zombies left are another parent's to reap (a PID 1 that never reaps, in some containers); they run nothing,
    /// so they do not count. The group's leader is never reaped here: if it is our child, its spawner reaps it and
    /// wants its exit status.
    static func isGone(_ pgid: Int32) -> Bool {
        guard exists(pgid) else { return true }
        guard let members = ProcessTable.members(ofGroup: pgid) else { return false }
        let me = getpid()
        var status: Int32 = 0
        for member in members where member.isZombie && member.parent == me && member.pid != pgid {
            _ = waitpid(member.pid, &status, WNOHANG)
        }
        return !exists(pgid) || members.allSatisfy(\.isZombie)
    }

    /// Waits until our child `pid` has exited, without reaping it (its spawner still wants its status).
    ///
    /// Polls `waitid(…, WNOWAIT)` every 100 ms; returns at once when the child already exited (the usual case) or
    /// when the task is cancelled.
    package static func waitForExit(of pid: Int32) async {
        while !Task.isCancelled {
            var info = siginfo_t()
            let result = waitid(P_PID, id_t(pid), &info, WEXITED | WNOHANG | WNOWAIT)
            // Linux sets `si_signo` to SIGCHLD when a child is reported and to 0 when none is waitable yet.
            if result != 0 || info.si_signo != 0 { return }
            do { try await Task.sleep(for: .milliseconds(100)) } catch { return }
        }
    }

    /// Makes this process the reaper of its orphaned descendants (Linux `PR_SET_CHILD_SUBREAPER`).
    ///
    /// Without it, a job's grandchildren are re-parented to PID 1 when the job's leader exits; in a container whose
    /// PID 1 does not reap, they stay zombies and their group never disappears. Only the agent executable calls this:
    /// it changes the whole process, so test processes must not.
    ///
    /// - Returns: whether the setting took effect.
    @discardableResult
    package static func becomeSubreaper() -> Bool {
        #if os(Linux)
        // `prctl` is variadic in C, so Swift cannot call it directly; with integer arguments only, calling it
        // through a fixed-arity pointer is ABI-compatible on the Linux targets we support (x86_64, arm64).
        typealias Prctl = @convention(c) (Int32, UInt, UInt, UInt, UInt) -> Int32
        guard let handle = dlopen(nil, RTLD_NOW), let symbol = dlsym(handle, "prctl") else { return false }
        let prctl = unsafeBitCast(symbol, to: Prctl.self)
        let setChildSubreaper: Int32 = 36  // PR_SET_CHILD_SUBREAPER
        return prctl(setChildSubreaper, 1, 0, 0, 0) == 0
        #else
        return false
        #endif
    }

    /// Sleeps without honouring cancellation, so a kill sequence keeps its timing even in a cancelled task.
    static func pause(_ duration: Duration) async {
        let nanos = duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().asyncAfter(deadline: .now() + .nanoseconds(Int(nanos))) { continuation.resume() }
        }
    }
}
