import ComityCore
import Foundation
import Testing

/// The gateway's choice of replicas, the controller's replacement rules, and the placer's spread exclusion.
@Suite("Service routing and replica placement")
struct ServiceRoutingTests {
    static let policies = PolicySnapshot(
        facts: FederationFacts(jurisdictions: ["EU": nil, "DE": "EU", "FR": "EU", "KE": nil, "US": nil]), versions: []
    ).active(at: Date(timeIntervalSince1970: 1_800_000_000))

    static func host(_ name: String, _ jurisdiction: String) -> HostFacts {
        HostFacts(id: 0, name: name, partner: "p", region: jurisdiction.lowercased() + "-1", jurisdiction: jurisdiction)
    }

    @Test("the header: codes or set names, comma separated, trimmed, without repeats")
    func areas() throws {
        #expect(try ServiceRouting.areas("KE", field: "h").get() == ["KE"])
        #expect(try ServiceRouting.areas(" KE , EU,KE", field: "h").get() == ["KE", "EU"])
        #expect(try ServiceRouting.areas("eea-plus", field: "h").get() == ["eea-plus"])
        for bad in ["", " ", "KE,,EU", "K E", "KE;EU"] {
            guard case .failure(let failure) = ServiceRouting.areas(bad, field: "Comity-Data-Jurisdiction") else {
                Issue.record("\"\(bad)\" was accepted")
                continue
            }
            #expect(failure.errors.first?.field == "Comity-Data-Jurisdiction")
        }
    }

    @Test("only replicas inside the data's area are permitted; containment follows the jurisdiction tree")
    func decide() {
        let hosts = [Self.host("a", "DE"), Self.host("b", "US"), Self.host("c", "KE"), Self.host("d", "FR")]
        #expect(ServiceRouting.decide(service: "llm", hosts: hosts, areas: ["KE"], policies: Self.policies).permitted == [2])
        #expect(ServiceRouting.decide(service: "llm", hosts: hosts, areas: ["EU"], policies: Self.policies).permitted == [0, 3])
        #expect(ServiceRouting.decide(service: "llm", hosts: hosts, areas: ["DE", "KE"], policies: Self.policies).permitted == [0, 2])
    }

    @Test("a refusal says where the healthy replicas are and where the data may go")
    func refusal() {
        let refused = ServiceRouting.decide(service: "llm", hosts: [Self.host("a", "DE"), Self.host("b", "US")], areas: ["KE"], policies: Self.policies)
        #expect(refused.permitted.isEmpty)
        #expect(refused.refusal == "service llm has 2 healthy replicas, in DE and US; data from KE may go only to hosts in KE")
        let one = ServiceRouting.decide(service: "llm", hosts: [Self.host("a", "DE"), Self.host("b", "DE")], areas: ["KE", "US"], policies: Self.policies)
        #expect(one.refusal == "service llm has 2 healthy replicas, in DE; data from KE, US may go only to hosts in KE, US")
        let none = ServiceRouting.decide(service: "llm", hosts: [], areas: ["KE"], policies: Self.policies)
        #expect(none.refusal == "service llm has no healthy replica")
    }

    @Test("areas that are neither a jurisdiction nor a set are named")
    func unknown() {
        #expect(ServiceRouting.unknownAreas(["KE", "ATLANTIS", "EU"], policies: Self.policies) == ["ATLANTIS"])
    }

    @Test(
        "replacement by restart policy",
        arguments: [
            (ServiceSpec.RestartPolicy.always, JobState.succeeded, Int32?.some(0), true),
            (.always, .failed, 3, true),
            (.onFailure, .succeeded, 0, false),
            (.onFailure, .failed, 3, true),
            (.never, .failed, 3, false),
            (.never, .succeeded, 0, false),
            // Ended by the infrastructure or a cancel: replaced whatever the policy.
            (.never, .failed, nil, true),
            (.never, .cancelled, nil, true),
            (.always, .running, nil, false),
        ])
    func replaces(policy: ServiceSpec.RestartPolicy, state: JobState, exitCode: Int32?, expected: Bool) {
        #expect(ServiceRouting.replaces(policy, state: state, exitCode: exitCode) == expected)
    }

    @Test("back-off: the first replacement at once, then 5 s doubling to 5 min")
    func backoff() {
        #expect((0...10).map { ServiceRouting.backoffSeconds(recentEnds: $0) } == [0, 0, 5, 10, 20, 40, 80, 160, 300, 300, 300])
    }

    @Test("the placer never picks an excluded host, even the representative of look-alike hosts")
    func exclusion() {
        let hosts = (1...4).map { HostAvailability(id: Int64($0), freeCPUMillis: 8000, freeMemoryBytes: 32 << 30, freeGPUs: [], totalGPUs: 0) }
        var session = Placer.Session(hosts)
        let request = ResourceRequest(cpuMillis: 1000, memoryBytes: 1 << 30)
        var used: Set<Int64> = []
        for id in 1...4 {
            let placement = session.place(PendingJob(id: Int64(id), resources: request, priority: 50), cacheKey: -7, excluding: used) { _ in true }
            let host = try? #require(placement?.hostID)
            #expect(host.map { !used.contains($0) } == true)
            if let host { used.insert(host) }
        }
        #expect(used == [1, 2, 3, 4])
        // Every host holds a replica: the fifth fits nowhere, and other jobs still fit.
        #expect(session.place(PendingJob(id: 5, resources: request, priority: 50), cacheKey: -7, excluding: used) { _ in true } == nil)
        #expect(session.place(PendingJob(id: 6, resources: request, priority: 50)) { _ in true } != nil)
    }
}
