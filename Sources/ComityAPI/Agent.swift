import ComityCore
import Foundation

/// Sent once by a new agent with its one-time join token.
public struct EnrollRequest: Codable, Sendable {
    public var joinToken: String
    /// The host's name (defaults to its hostname); unique within the partner.
    public var name: String
    public var resources: HostResources
    public var labels: [String: String]
    public var agentVersion: String

    public init(joinToken: String, name: String, resources: HostResources, labels: [String: String] = [:], agentVersion: String) {
        self.joinToken = joinToken
        self.name = name
        self.resources = resources
        self.labels = labels
        self.agentVersion = agentVersion
    }
}

public struct EnrollResponse: Codable, Sendable {
    public var hostId: Int64
    public var hostName: String
    /// The agent's credential; kept in its state folder, sent as a bearer token.
    public var token: String
    public var heartbeatSeconds: Int
    public var leaseSeconds: Int

    public init(hostId: Int64, hostName: String, token: String, heartbeatSeconds: Int, leaseSeconds: Int) {
        self.hostId = hostId
        self.hostName = hostName
        self.token = token
        self.heartbeatSeconds = heartbeatSeconds
        self.leaseSeconds = leaseSeconds
    }
}

public struct HeartbeatRequest: Codable, Sendable {
    /// Attempts the agent is running now; their leases are renewed.
    public var attempts: [Int64]
    /// Updated inventory, when it changed.
    public var resources: HostResources?
    /// The state of the services (inference attempts) among `attempts`.
    public var services: [ServiceStatus]?

    public init(attempts: [Int64], resources: HostResources? = nil, services: [ServiceStatus]? = nil) {
        self.attempts = attempts
        self.resources = resources
        self.services = services
    }
}

/// What an agent knows of one service replica it runs.
public struct ServiceStatus: Codable, Sendable, Hashable {
    public var attempt: Int64
    /// Where the replica answers, e.g. `http://10.0.0.5:41234` (the agent's advertised address and the port it gave).
    public var url: String?
    /// Whether its last health check passed.
    public var healthy: Bool
    /// How many times the agent restarted it in this attempt.
    public var restarts: Int
    /// Why it is unhealthy (the last check's failure), when it is.
    public var message: String?

    public init(attempt: Int64, url: String?, healthy: Bool, restarts: Int = 0, message: String? = nil) {
        self.attempt = attempt
        self.url = url
        self.healthy = healthy
        self.restarts = restarts
        self.message = message
    }
}

public struct HeartbeatResponse: Codable, Sendable {
    /// Attempts the agent must stop now (cancelled, or no longer the job's current attempt).
    public var stop: [Int64]
    public var leaseSeconds: Int

    public init(stop: [Int64], leaseSeconds: Int) {
        self.stop = stop
        self.leaseSeconds = leaseSeconds
    }
}

/// Work handed to an agent: run `spec` as attempt `attempt`.
public struct Assignment: Codable, Sendable, Hashable {
    public var attempt: Int64
    public var jobId: Int64
    public var spec: JobSpec
    public var gpuIndices: [Int]
    public var gpuUuids: [String]
    public var leaseExpiresAt: Date

    public init(attempt: Int64, jobId: Int64, spec: JobSpec, gpuIndices: [Int], gpuUuids: [String], leaseExpiresAt: Date) {
        self.attempt = attempt
        self.jobId = jobId
        self.spec = spec
        self.gpuIndices = gpuIndices
        self.gpuUuids = gpuUuids
        self.leaseExpiresAt = leaseExpiresAt
    }
}

public struct AssignmentList: Codable, Sendable {
    public var assignments: [Assignment]

    public init(assignments: [Assignment]) { self.assignments = assignments }
}

public struct LogAppend: Codable, Sendable {
    /// The agent's own counter for this attempt, so a retried upload is stored once.
    public var seq: Int64
    public var stream: LogStream
    public var data: String

    public init(seq: Int64, stream: LogStream, data: String) {
        self.seq = seq
        self.stream = stream
        self.data = data
    }
}

public enum AttemptOutcome: String, Codable, Sendable {
    /// The process exited; `exitCode` says how.
    case exited
    /// The agent could not start or run the process (`message` says why).
    case error
    /// Stopped because the server asked (cancel or stale attempt).
    case stopped
    /// The kernel's OOM killer ended the job because it exceeded its memory limit (`message` names the limit).
    case oomKilled = "oom_killed"
}

public struct FinishRequest: Codable, Sendable {
    public var outcome: AttemptOutcome
    public var exitCode: Int32?
    public var message: String?
    /// What the attempt used (GPU memory and utilization), when the agent sampled it.
    public var usage: AttemptUsage?

    public init(outcome: AttemptOutcome, exitCode: Int32? = nil, message: String? = nil, usage: AttemptUsage? = nil) {
        self.outcome = outcome
        self.exitCode = exitCode
        self.message = message
        self.usage = usage
    }
}

/// The server's answer to start/finish/log calls: whether the attempt is still the one to run.
public struct AttemptAck: Codable, Sendable {
    /// `false` when the attempt was fenced off (cancelled, lost, or replaced): the agent must stop it.
    public var current: Bool
    public var state: AttemptState

    public init(current: Bool, state: AttemptState) {
        self.current = current
        self.state = state
    }
}

/// Several start and end reports of one agent in one request (`POST /v1/agent/reports`): an agent that starts or ends
/// attempts while a report is on its way sends them together in the next. Starts are applied before ends, so an
/// attempt may be started and ended by one report. Each item gets its own answer; an attempt the host does not have
/// fails only its own item.
public struct AttemptReports: Codable, Sendable {
    /// Attempts the agent has started (as `POST /v1/agent/attempts/{id}/start`).
    public var starts: [Int64]
    /// Attempts that ended (as `POST /v1/agent/attempts/{id}/finish`).
    public var ends: [AttemptEnd]

    /// The most items (starts and ends together) in one request.
    public static let limit = 1_000

    public init(starts: [Int64] = [], ends: [AttemptEnd] = []) {
        self.starts = starts
        self.ends = ends
    }
}

/// The end of one attempt, in ``AttemptReports``.
public struct AttemptEnd: Codable, Sendable {
    public var attempt: Int64
    public var outcome: AttemptOutcome
    public var exitCode: Int32?
    public var message: String?
    public var usage: AttemptUsage?

    public init(attempt: Int64, _ report: FinishRequest) {
        self.attempt = attempt
        self.outcome = report.outcome
        self.exitCode = report.exitCode
        self.message = report.message
        self.usage = report.usage
    }

    public var report: FinishRequest { FinishRequest(outcome: outcome, exitCode: exitCode, message: message, usage: usage) }
}

/// The answers to ``AttemptReports``, item by item in the request's order.
public struct AttemptReportResults: Codable, Sendable {
    public var starts: [AttemptReportResult]
    public var ends: [AttemptReportResult]

    public init(starts: [AttemptReportResult], ends: [AttemptReportResult]) {
        self.starts = starts
        self.ends = ends
    }
}

/// The answer to one item of ``AttemptReports``: the attempt's ``AttemptAck``, or why there is none.
public struct AttemptReportResult: Codable, Sendable {
    public var attempt: Int64
    /// `false` when the attempt was fenced off or was not found.
    public var current: Bool
    /// The attempt's state; absent when it was not found.
    public var state: AttemptState?
    /// `not_found` when this host has no such attempt.
    public var error: String?

    public init(attempt: Int64, ack: AttemptAck) {
        self.attempt = attempt
        self.current = ack.current
        self.state = ack.state
    }

    public init(attempt: Int64, error: String) {
        self.attempt = attempt
        self.current = false
        self.error = error
    }

    /// The ack, or `nil` when the attempt was not found.
    public var ack: AttemptAck? { state.map { AttemptAck(current: current, state: $0) } }
}
