/// The states of a job. Terminal states never change again.
public enum JobState: String, Sendable, Hashable, Codable, CaseIterable {
    case queued, assigned, running, succeeded, failed, cancelled

    public var isTerminal: Bool { self == .succeeded || self == .failed || self == .cancelled }
    /// States in which an attempt holds resources on a host.
    public var holdsHost: Bool { self == .assigned || self == .running }
}

/// The states of one attempt (one placement of a job on a host). The attempt id is the fencing token.
public enum AttemptState: String, Sendable, Hashable, Codable, CaseIterable {
    case assigned, running, succeeded, failed, cancelled
    /// The agent stopped renewing the lease.
    case lost
    /// Taken back by the scheduler (reclaim); the job requeues.
    case preempted

    public var isTerminal: Bool { self != .assigned && self != .running }
}

/// What can happen to a job.
public enum JobEvent: Sendable, Hashable {
    /// The scheduler bound the job to a host.
    case assigned
    /// The agent started the process.
    case started
    /// The process ended with this exit code.
    case exited(code: Int32)
    /// The agent reports it could not start or run the job (not an exit code).
    case errored
    /// A user cancelled.
    case cancelled
    /// The attempt's lease expired or it was preempted.
    case attemptLost
}

/// The job state machine: given a state, an event and the retry budget, the next state.
///
/// Lost attempts (lease expired, agent error, preemption) requeue while retries remain; a job that used
/// `retries + 1` attempts fails. A non-zero exit code fails the job at once: retries cover the infrastructure,
/// not the program.
public struct JobTransition: Sendable, Hashable {
    public var state: JobState
    public var attemptsUsed: Int
    public var retries: Int

    public init(state: JobState, attemptsUsed: Int, retries: Int) {
        self.state = state
        self.attemptsUsed = attemptsUsed
        self.retries = retries
    }

    /// Whether another attempt may start after this one ends without success.
    public var hasRetriesLeft: Bool { attemptsUsed <= retries }

    /// The next state, or `nil` when the event is not allowed in this state (the caller ignores or rejects it).
    public func next(on event: JobEvent) -> JobState? {
        switch (state, event) {
        case (.queued, .assigned): return .assigned
        case (.assigned, .started): return .running
        case (.assigned, .exited(let code)), (.running, .exited(let code)):
            // A non-zero exit is the job's own answer, not an infrastructure fault: it is final (as in Slurm).
            return code == 0 ? .succeeded : .failed
        case (.assigned, .errored), (.running, .errored):
            return hasRetriesLeft ? .queued : .failed
        case (.queued, .cancelled), (.assigned, .cancelled), (.running, .cancelled): return .cancelled
        case (.assigned, .attemptLost), (.running, .attemptLost):
            return hasRetriesLeft ? .queued : .failed
        default: return nil
        }
    }
}
