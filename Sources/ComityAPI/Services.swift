import ComityCore
import Foundation

/// A service (a `kind: inference` job file) and its replicas, as the API shows it.
public struct ServiceView: Codable, Sendable, Hashable {
    public var id: Int64
    public var name: String
    public var project: String
    public var partner: String
    /// How many replicas the service should run (what it was submitted or last scaled with).
    public var replicas: Int
    /// Replicas whose attempt runs and whose last health check passed.
    public var healthy: Int
    public var spec: JobSpec
    public var createdBy: String
    public var createdAt: Date
    public var updatedAt: Date
    /// The current job of each replica index (and any replica being stopped after a scale-down), by index.
    public var replicaJobs: [ReplicaView]

    public init(
        id: Int64, name: String, project: String, partner: String, replicas: Int, healthy: Int, spec: JobSpec, createdBy: String,
        createdAt: Date, updatedAt: Date, replicaJobs: [ReplicaView]
    ) {
        self.id = id
        self.name = name
        self.project = project
        self.partner = partner
        self.replicas = replicas
        self.healthy = healthy
        self.spec = spec
        self.createdBy = createdBy
        self.createdAt = createdAt
        self.updatedAt = updatedAt
        self.replicaJobs = replicaJobs
    }
}

/// One replica: its job, where its attempt runs, and what the agent last reported of it.
public struct ReplicaView: Codable, Sendable, Hashable {
    /// 0 to `replicas - 1`.
    public var index: Int
    public var job: Int64
    public var state: JobState
    public var attempt: Int64?
    public var host: String?
    public var region: String?
    public var jurisdiction: String?
    public var url: String?
    /// `nil` until the agent reported a health check.
    public var healthy: Bool?
    public var restarts: Int
    /// Why it is unhealthy (the agent's last failed check), or why the job ended.
    public var message: String?
    /// When the agent last reported the replica's health.
    public var checkedAt: Date?

    public init(
        index: Int, job: Int64, state: JobState, attempt: Int64?, host: String?, region: String?, jurisdiction: String?, url: String?,
        healthy: Bool?, restarts: Int, message: String?, checkedAt: Date?
    ) {
        self.index = index
        self.job = job
        self.state = state
        self.attempt = attempt
        self.host = host
        self.region = region
        self.jurisdiction = jurisdiction
        self.url = url
        self.healthy = healthy
        self.restarts = restarts
        self.message = message
        self.checkedAt = checkedAt
    }
}

public struct ServiceList: Codable, Sendable {
    public var services: [ServiceView]

    public init(services: [ServiceView]) { self.services = services }
}

/// The body of `PATCH /v1/services/{name}`.
public struct ScaleRequest: Codable, Sendable, Hashable {
    /// 0 to 64; 0 stops every replica and keeps the service (scale it up again to restart it).
    public var replicas: Int

    public init(replicas: Int) { self.replicas = replicas }
}

/// A healthy replica that answers requests.
public struct Endpoint: Codable, Sendable, Hashable {
    public var replica: Int
    public var job: Int64
    public var attempt: Int64
    public var host: String
    public var region: String
    public var jurisdiction: String
    public var url: String
    public var restarts: Int
    public var checkedAt: Date

    public init(
        replica: Int, job: Int64, attempt: Int64, host: String, region: String, jurisdiction: String, url: String, restarts: Int,
        checkedAt: Date
    ) {
        self.replica = replica
        self.job = job
        self.attempt = attempt
        self.host = host
        self.region = region
        self.jurisdiction = jurisdiction
        self.url = url
        self.restarts = restarts
        self.checkedAt = checkedAt
    }
}

public struct EndpointList: Codable, Sendable {
    public var service: String
    public var project: String
    public var endpoints: [Endpoint]

    public init(service: String, project: String, endpoints: [Endpoint]) {
        self.service = service
        self.project = project
        self.endpoints = endpoints
    }
}

/// Headers of the gateway (`/v1/gateway/{service}/...`).
public enum GatewayHeader {
    /// Request: where the data sent may be processed: jurisdiction codes or jurisdiction-set names, comma separated.
    public static let dataJurisdiction = "Comity-Data-Jurisdiction"
    /// Response: the host of the replica that answered.
    public static let replica = "Comity-Replica"
}
