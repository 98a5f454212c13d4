import ComityCore
import Synchronization

/// Why the agent ends a job before the job ends itself.
package enum StopReason: Sendable, Hashable, CustomStringConvertible {
    /// The server asked (cancel, preempt, or the attempt is no longer current).
    case server
    /// The job ran past its `max_runtime`.
    case maxRuntime(seconds: Int64)
    /// The agent is shutting down.
    case shutdown

    package var description: String {
        switch self {
        case .server: "stopped by the server"
        case .maxRuntime(let seconds): "exceeded max_runtime \(Quantity.formatSeconds(seconds))"
        case .shutdown: "agent shutting down"
        }
    }
}

/// The handle through which anything (heartbeat, log acks, the runtime limit, shutdown) asks a running job to stop.
///
/// The first reason wins; later requests are ignored. Safe to call before the job has started: the runner then does
/// not start it.
package final class JobControl: Sendable {
    enum Event: Sendable {
        case stop
        case leaderExited
        case graceExpired
    }

    let events: AsyncStream<Event>
    private let continuation: AsyncStream<Event>.Continuation
    private let reason = Mutex<StopReason?>(nil)
    private let terminated = Mutex<ContinuousClock.Instant?>(nil)

    package init() {
        (events, continuation) = AsyncStream.makeStream(of: Event.self)
    }

    /// Asks the job to stop; returns `false` when a stop was already requested.
    @discardableResult
    package func stop(_ reason: StopReason) -> Bool {
        let isFirst = self.reason.withLock { current in
            guard current == nil else { return false }
            current = reason
            return true
        }
        if isFirst { continuation.yield(.stop) }
        return isFirst
    }

    /// The first stop reason, if any.
    package var stopReason: StopReason? { reason.withLock { $0 } }

    func leaderExited() { continuation.yield(.leaderExited) }

    func graceExpired() { continuation.yield(.graceExpired) }

    /// When the runner sent `SIGTERM` to the job's group, if it did.
    var terminatedAt: ContinuousClock.Instant? {
        get { terminated.withLock { $0 } }
        set { terminated.withLock { $0 = newValue } }
    }
}
