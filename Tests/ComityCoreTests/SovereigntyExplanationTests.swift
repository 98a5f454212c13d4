import ComityCore
import Foundation
import Testing

@Suite("Sovereignty explanations and placement")
struct SovereigntyExplanationTests {
    let snapshot: PolicySnapshot
    let hosts = [
        Fixture.host(1, "tum", "DE"), Fixture.host(2, "tum", "FR"), Fixture.host(3, "mak", "KE"), Fixture.host(4, "uon", "KE"),
    ]

    init() throws {
        snapshot = try Fixture.snapshot([
            Fixture.dataset("ds", extra: #""residency": {"allow": ["KE"]}"#),
            #"{"kind": "donor-policy", "name": "mak", "timezone": "Africa/Nairobi", "permit": [{"id": "evenings", "windows": [{"from": "18:00", "to": "06:00"}]}]}"#,
            Fixture.openDonor("uon"),
        ])
    }

    @Test("the summary counts hosts per reason, most common first: 0/3 hosts eligible: 2 RESIDENCY(ds: KE only), 1 …")
    func summary() {
        let job = Fixture.job("vision", inputs: ["ds"])
        let reasons = hosts.prefix(3).map { snapshot.evaluate(job, on: $0, at: Fixture.noon).failures }
        #expect(
            ExplanationText.summary(reasons)
                == "0/3 hosts eligible: 2 RESIDENCY(ds: KE only), 1 DONOR_WINDOW(mak#evenings: guests 18:00-06:00 Africa/Nairobi, opens in 3h)")
        let all = hosts.map { snapshot.evaluate(job, on: $0, at: Fixture.noon).failures }
        #expect(
            ExplanationText.summary(all)
                == "1/4 hosts eligible: 2 RESIDENCY(ds: KE only), 1 DONOR_WINDOW(mak#evenings: guests 18:00-06:00 Africa/Nairobi, opens in 3h)")
        #expect(ExplanationText.summary([[], []]) == "2/2 hosts eligible")
    }

    @Test("the summary counts a host once per distinct reason, and takes capacity reasons")
    func summaryWithCapacity() {
        let request = ResourceRequest(cpuMillis: 1000, memoryBytes: 1 << 30, gpus: 1, gpuMemoryBytes: 80 << 30)
        let small = HostResources(
            cpuMillis: 8000, memoryBytes: 64 << 30, gpus: [GPU(index: 0, uuid: "GPU-0", model: "NVIDIA L4", memoryBytes: 24 << 30)])
        let gpu = CapacityCheck.reasons(request, total: small, free: nil)
        #expect(gpu.map(\.code) == [.gpuMemory])
        let twice = Reason(.residency, subject: "ds", category: .data, detail: "one", brief: "KE only")
        #expect(
            ExplanationText.summary([[twice, twice], gpu, [twice]])
                == "0/3 hosts eligible: 2 RESIDENCY(ds: KE only), 1 GPU_MEMORY(needs 80Gi)")
    }

    @Test("the nearest ways out: one dataset's residency, or a donor window")
    func waysOut() {
        let job = Fixture.job("vision", inputs: ["ds"])
        let found = hosts.map { (jurisdiction: $0.jurisdiction, reasons: snapshot.evaluate(job, on: $0, at: Fixture.noon).failures) }
        #expect(
            ExplanationText.waysOut(found) == [
                "would be eligible on 2 hosts if ds allowed DE, FR",
                "1 host would be eligible inside the donor's window: guests only 18:00-06:00 Africa/Nairobi (opens in 3h)",
            ])
    }

    static func free(_ id: Int64, cpus: Int, partner: Int64, key: Int) -> HostAvailability {
        HostAvailability(
            id: id, freeCPUMillis: cpus * 1000, freeMemoryBytes: 64 << 30, freeGPUs: [], totalGPUs: 0, partnerID: partner, policyKey: key)
    }

    static func pending(_ id: Int64, cpus: Int, partner: Int64, policyClass: Int) -> PendingJob {
        PendingJob(
            id: id, resources: ResourceRequest(cpuMillis: cpus * 1000, memoryBytes: 1 << 30), priority: 0, partnerID: partner,
            policyClass: policyClass)
    }

    @Test("the placer considers only hosts the engine admits, even when others fit better")
    func placerHonoursEligibility() {
        let hosts = [Self.free(1, cpus: 2, partner: 1, key: 10), Self.free(2, cpus: 64, partner: 1, key: 20)]
        let jobs = [Self.pending(100, cpus: 2, partner: 1, policyClass: 0), Self.pending(101, cpus: 2, partner: 1, policyClass: 1)]
        let placements = Placer.place(jobs, on: hosts) { policyClass, policyKey in policyClass == 0 && policyKey == 20 }
        #expect(placements == [Placement(jobID: 100, hostID: 2, gpuIndices: [])])
    }

    @Test("the placer prefers the job's own partner's hosts, and borrows only when they are full")
    func placerPrefersOwnHosts() {
        let hosts = [Self.free(1, cpus: 2, partner: 3, key: 0), Self.free(2, cpus: 6, partner: 7, key: 0)]
        let jobs = (0..<4).map { Self.pending(100 + Int64($0), cpus: 2, partner: 7, policyClass: 0) }
        let placements = Placer.place(jobs, on: hosts) { _, _ in true }
        #expect(placements.map(\.hostID) == [2, 2, 2, 1])
    }

    @Test("end to end: eligibility memoized per (job class, host key) from the engine, then placement")
    func endToEnd() {
        let partners = ["tum": Int64(1), "mak": 2, "uon": 3]
        var keys: [PolicyHostKey: Int] = [:]
        for host in hosts where keys[host.policyKey] == nil { keys[host.policyKey] = keys.count }
        let classes = [Fixture.job("asr", inputs: ["ds"]), Fixture.job("malaria", inputs: ["ds"])]
        let representative = Dictionary(hosts.map { (keys[$0.policyKey]!, $0) }, uniquingKeysWith: { first, _ in first })
        var memo: [[Int]: Bool] = [:]
        for (index, job) in classes.enumerated() {
            for (key, host) in representative { memo[[index, key]] = snapshot.evaluate(job, on: host, at: Fixture.noon).eligible }
        }
        let free = hosts.map { Self.free($0.id, cpus: 4, partner: partners[$0.partner]!, key: keys[$0.policyKey]!) }
        // Three uon jobs: two fill uon's own host, the third goes to mak's only while mak's window is open (it is not).
        var jobs = (0..<3).map { Self.pending(100 + Int64($0), cpus: 2, partner: 3, policyClass: 0) }
        // A mak job uses mak's host (its own) before uon's.
        jobs.append(Self.pending(200, cpus: 2, partner: 2, policyClass: 1))
        let placements = Placer.place(jobs, on: free) { memo[[$0, $1]] ?? false }
        #expect(
            placements == [
                Placement(jobID: 100, hostID: 4, gpuIndices: []), Placement(jobID: 101, hostID: 4, gpuIndices: []),
                Placement(jobID: 200, hostID: 3, gpuIndices: []),
            ])
    }
}
