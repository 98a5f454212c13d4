import ComityCore
import Foundation

/// A job as the API shows it.
public struct JobView: Codable, Sendable, Hashable {
    public var id: Int64
    public var name: String
    public var project: String
    public var partner: String
    public var kind: JobKind
    public var state: JobState
    public var priority: Int
    public var spec: JobSpec
    public var submittedBy: String
    public var submittedAt: Date
    public var startedAt: Date?
    public var finishedAt: Date?
    /// The current (or last) attempt id; the fencing token of its placement.
    public var attempt: Int64?
    public var attempts: Int
    public var host: String?
    public var region: String?
    public var gpuIndices: [Int]?
    public var exitCode: Int32?
    /// Why the job ended or was requeued (`lost`, `cancelled by alice`, `exit 3`).
    public var reason: String?
    public var cancelRequested: Bool
    /// What the current (or last) attempt used, as its agent sampled it (GPU memory and utilization); `nil` while
    /// it runs and when nothing was sampled.
    public var usage: AttemptUsage?

    public init(
        id: Int64, name: String, project: String, partner: String, kind: JobKind, state: JobState, priority: Int,
        spec: JobSpec, submittedBy: String, submittedAt: Date, startedAt: Date?, finishedAt: Date?, attempt: Int64?,
        attempts: Int, host: String?, region: String?, gpuIndices: [Int]?, exitCode: Int32?, reason: String?,
        cancelRequested: Bool, usage: AttemptUsage? = nil
    ) {
        self.id = id
        self.name = name
        self.project = project
        self.partner = partner
        self.kind = kind
        self.state = state
        self.priority = priority
        self.spec = spec
        self.submittedBy = submittedBy
        self.submittedAt = submittedAt
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.attempt = attempt
        self.attempts = attempts
        self.host = host
        self.region = region
        self.gpuIndices = gpuIndices
        self.exitCode = exitCode
        self.reason = reason
        self.cancelRequested = cancelRequested
        self.usage = usage
    }
}

public struct JobList: Codable, Sendable {
    public var jobs: [JobView]

    public init(jobs: [JobView]) { self.jobs = jobs }
}

public struct JobEventView: Codable, Sendable, Hashable {
    public var id: Int64
    public var at: Date
    public var kind: String
    public var attempt: Int64?
    public var message: String

    public init(id: Int64, at: Date, kind: String, attempt: Int64?, message: String) {
        self.id = id
        self.at = at
        self.kind = kind
        self.attempt = attempt
        self.message = message
    }
}

public struct JobEventList: Codable, Sendable {
    public var events: [JobEventView]

    public init(events: [JobEventView]) { self.events = events }
}

public enum LogStream: String, Codable, Sendable, Hashable {
    case stdout, stderr
}

public struct LogChunk: Codable, Sendable, Hashable {
    /// Position of the chunk in the job's log, across attempts; ascending.
    public var seq: Int64
    public var attempt: Int64
    public var stream: LogStream
    public var data: String
    public var at: Date

    public init(seq: Int64, attempt: Int64, stream: LogStream, data: String, at: Date) {
        self.seq = seq
        self.attempt = attempt
        self.stream = stream
        self.data = data
        self.at = at
    }
}

/// A page of a job's log. Ask again with `after = next` to follow.
public struct LogPage: Codable, Sendable {
    public var chunks: [LogChunk]
    public var next: Int64
    /// The job is terminal and every chunk has been returned.
    public var complete: Bool
    /// The job's log reached its bound and later output was dropped.
    public var truncated: Bool
    public var state: JobState

    public init(chunks: [LogChunk], next: Int64, complete: Bool, truncated: Bool, state: JobState) {
        self.chunks = chunks
        self.next = next
        self.complete = complete
        self.truncated = truncated
        self.state = state
    }
}

/// The answer to an array submission: the ids of the jobs created, in index order.
public struct JobSubmission: Codable, Sendable {
    public var ids: [Int64]

    public init(ids: [Int64]) { self.ids = ids }
}
