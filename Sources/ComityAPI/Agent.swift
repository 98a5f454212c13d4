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
