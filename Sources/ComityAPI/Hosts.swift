import ComityCore
import Foundation

public enum HostState: String, Codable, Sendable, Hashable, CaseIterable {
    /// Takes new work.
    case active
    /// Runs what it has, takes nothing new.
    case draining
    /// Missed its heartbeats; its attempts' leases run out.
    case down
}

public struct HostView: Codable, Sendable, Hashable {
    public var id: Int64
    public var name: String
    public var partner: String
    public var region: String
    public var jurisdiction: String
    public var state: HostState
    public var resources: HostResources
    public var labels: [String: String]
    public var allocatedCpuMillis: Int
    public var allocatedMemoryBytes: Int64
    public var allocatedGpus: [Int]
    public var runningAttempts: Int
    public var lastHeartbeat: Date?
    public var enrolledAt: Date
    public var agentVersion: String?

    public init(
        id: Int64, name: String, partner: String, region: String, jurisdiction: String, state: HostState,
        resources: HostResources, labels: [String: String], allocatedCpuMillis: Int, allocatedMemoryBytes: Int64,
        allocatedGpus: [Int], runningAttempts: Int, lastHeartbeat: Date?, enrolledAt: Date, agentVersion: String?
    ) {
        self.id = id
        self.name = name
        self.partner = partner
        self.region = region
        self.jurisdiction = jurisdiction
        self.state = state
        self.resources = resources
        self.labels = labels
        self.allocatedCpuMillis = allocatedCpuMillis
        self.allocatedMemoryBytes = allocatedMemoryBytes
        self.allocatedGpus = allocatedGpus
        self.runningAttempts = runningAttempts
        self.lastHeartbeat = lastHeartbeat
        self.enrolledAt = enrolledAt
        self.agentVersion = agentVersion
    }
}

public struct HostList: Codable, Sendable {
    public var hosts: [HostView]

    public init(hosts: [HostView]) { self.hosts = hosts }
}
