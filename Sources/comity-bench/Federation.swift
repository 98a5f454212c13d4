import AsyncHTTPClient
import ComityAPI
import ComityClient
import ComityCore
import Foundation

/// The benchmark's federation: five jurisdictions, four regions (each with its home partner), one project.
enum Federation {
    struct Site: Sendable {
        var region: String
        var jurisdiction: String
        var partner: String
    }

    static let sites = [
        Site(region: "eu-de-1", jurisdiction: "DE", partner: "tum"),
        Site(region: "eu-fr-1", jurisdiction: "FR", partner: "inria"),
        Site(region: "ke-nbo-1", jurisdiction: "KE", partner: "uon"),
        Site(region: "in-blr-1", jurisdiction: "IN", partner: "iisc"),
    ]
    static let project = "bench"
    static let projectPartner = "tum"

    /// Creates what is missing through the API (anything that exists already is left alone).
    static func ensure(admin: ComityClient) async throws {
        for jurisdiction in [Jurisdiction(code: "EU"), Jurisdiction(code: "DE", within: "EU"), Jurisdiction(code: "FR", within: "EU"),
                             Jurisdiction(code: "KE"), Jurisdiction(code: "IN")] {
            try await ignoringConflict { _ = try await admin.addJurisdiction(jurisdiction) }
        }
        for site in sites {
            try await ignoringConflict { _ = try await admin.addRegion(Region(name: site.region, jurisdiction: site.jurisdiction)) }
            try await ignoringConflict { _ = try await admin.addPartner(Partner(name: site.partner, jurisdiction: site.jurisdiction)) }
        }
        try await ignoringConflict { _ = try await admin.addProject(Project(name: project, partner: projectPartner)) }
        // Every other partner lends its hosts to the commons: a donation policy admitting every guest, written by
        // the partner's own admin (a partner without one takes no guests).
        for site in sites where site.partner != projectPartner {
            let owner = admin.with(token: try await admin.createToken(CreateTokenRequest(role: .partnerAdmin, partner: site.partner, name: "bench-donor")).token)
            let policy: JSONValue = .object([
                "kind": .string("donor-policy"), "name": .string(site.partner), "permit": .array([.object(["id": .string("everyone")])]),
            ])
            _ = try await owner.applyPolicy(PolicyApplyRequest(document: policy))
        }
    }

    /// A researcher token of the benchmark project: jobs are submitted the way a researcher would.
    static func researcher(admin: ComityClient) async throws -> ComityClient {
        let created = try await admin.createToken(CreateTokenRequest(role: .researcher, project: project, name: "bench-researcher"))
        return admin.with(token: created.token)
    }

    /// The hardware of simulated host number `index`: 1/4 with 8×H100 80Gi, 1/4 with 4×A100 40Gi, 1/2 CPU-only.
    static func resources(index: Int, uuidPrefix: String) -> (kind: String, resources: HostResources) {
        let gib: Int64 = 1 << 30
        switch index % 4 {
        case 0:
            let gpus = (0..<8).map { GPU(index: $0, uuid: "GPU-\(uuidPrefix)-\($0)", model: "NVIDIA H100 80GB HBM3", memoryBytes: 80 * gib) }
            return ("h100", HostResources(cpuMillis: 128_000, memoryBytes: 1024 * gib, gpus: gpus))
        case 1:
            let gpus = (0..<4).map { GPU(index: $0, uuid: "GPU-\(uuidPrefix)-\($0)", model: "NVIDIA A100-SXM4-40GB", memoryBytes: 40 * gib) }
            return ("a100", HostResources(cpuMillis: 64_000, memoryBytes: 512 * gib, gpus: gpus))
        default:
            return ("cpu", HostResources(cpuMillis: 64_000, memoryBytes: 256 * gib))
        }
    }

    /// The site of host number `index`: every kind of host appears in every region.
    static func site(index: Int) -> Site { sites[(index / 4) % sites.count] }
}

/// A simulated host after enrollment: its own identity and credential.
struct SimulatedHost: Sendable {
    var id: Int64
    var name: String
    var kind: String
    var region: String
    var token: String
    var heartbeatSeconds: Int
}

/// Enrolls `count` hosts exactly as agents do: a join token per host (made by the admin), then `enroll` with it.
func enrollHosts(count: Int, admin: ComityClient, concurrency: Int = 16) async throws -> [SimulatedHost] {
    let run = String(UInt32.random(in: 0..<UInt32.max), radix: 36)
    let anonymous = admin.with(token: nil)
    var hosts: [SimulatedHost] = []
    hosts.reserveCapacity(count)
    try await withThrowingTaskGroup(of: SimulatedHost.self) { group in
        for index in 0..<count {
            if index >= concurrency, let host = try await group.next() { hosts.append(host) }
            group.addTask {
                let site = Federation.site(index: index)
                let number = String(index)
                let name = "sim-\(run)-" + String(repeating: "0", count: max(0, 5 - number.count)) + number
                let (kind, resources) = Federation.resources(index: index, uuidPrefix: name)
                let join = try await retrying {
                    try await admin.createJoinToken(CreateJoinTokenRequest(partner: site.partner, region: site.region))
                }
                let enrolled = try await retrying {
                    try await anonymous.enroll(
                        EnrollRequest(joinToken: join.token, name: name, resources: resources, agentVersion: "comity-bench"))
                }
                return SimulatedHost(
                    id: enrolled.hostId, name: name, kind: kind, region: site.region, token: enrolled.token,
                    heartbeatSeconds: enrolled.heartbeatSeconds)
            }
        }
        while let host = try await group.next() { hosts.append(host) }
    }
    return hosts.sorted { $0.id < $1.id }
}
