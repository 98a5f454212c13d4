import ComityCore
import Testing

/// The placer's host groups, kept between passes and moved host by host: always the groups built afresh.
@Suite("Host groups moved between passes")
struct HostGroupsTests {
    static let templates: [HostAvailability] = [
        HostAvailability(id: 0, freeCPUMillis: 64_000, freeMemoryBytes: 256 << 30, freeGPUs: [], totalGPUs: 0),
        HostAvailability(id: 0, freeCPUMillis: 64_000, freeMemoryBytes: 256 << 30, freeGPUs: [], totalGPUs: 0, partnerID: 2),
        HostAvailability(
            id: 0, freeCPUMillis: 96_000, freeMemoryBytes: 1 << 40,
            freeGPUs: (0..<8).map { GPU(index: $0, uuid: "u\($0)", model: "H100", memoryBytes: 80 << 30) }, totalGPUs: 8),
        HostAvailability(
            id: 0, freeCPUMillis: 32_000, freeMemoryBytes: 128 << 30,
            freeGPUs: (0..<4).map { GPU(index: $0, uuid: "u\($0)", model: $0 < 2 ? "A100" : "L4", memoryBytes: 40 << 30) }, totalGPUs: 4),
    ]

    @Test("moving the hosts that hold work gives the groups of the pool built afresh, and the same placements", arguments: 0..<40)
    func movedEqualsFresh(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        // Many look-alike hosts, as in a real pool: groups of hundreds.
        let idle = (0..<Int.random(in: 1...600, using: &rng)).map { index -> HostAvailability in
            var host = Self.templates.randomElement(using: &rng)!
            host.id = Int64(index + 1)
            return host
        }
        let shapes = idle.map(Placer.HostShape.init)
        let base = Placer.HostGroups(shapes: shapes)
        #expect(base == Placer.HostGroups(idle))
        // A pass later: some hosts hold work (less CPU and memory, some GPUs taken), some twice over.
        var busy = idle
        var holding: [Int] = []
        for index in busy.indices where Int.random(in: 0..<5, using: &rng) == 0 {
            busy[index].freeCPUMillis -= 1000 * Int.random(in: 1...8, using: &rng)
            busy[index].freeMemoryBytes -= Int64(Int.random(in: 0...4, using: &rng)) << 30
            if !busy[index].freeGPUs.isEmpty, Bool.random(using: &rng) { busy[index].freeGPUs.removeFirst(Int.random(in: 1...busy[index].freeGPUs.count, using: &rng)) }
            holding.append(index)
        }
        let moved = base.moving(holding, from: shapes, to: busy)
        #expect(moved == Placer.HostGroups(busy))
        // And a session on the moved groups places a stream of jobs exactly as one that grouped the hosts itself.
        var fresh = Placer.Session(busy)
        var kept = Placer.Session(busy, groups: moved)
        for id in 0..<200 {
            let gpus = [0, 0, 0, 1, 2, 4].randomElement(using: &rng)!
            let job = PendingJob(
                id: Int64(id), resources: ResourceRequest(cpuMillis: 1000 * Int.random(in: 1...16, using: &rng), memoryBytes: 4 << 30, gpus: gpus),
                priority: 0, partnerID: 1, projectID: 1, policyClass: 0)
            #expect(fresh.place(job) { _ in true } == kept.place(job) { _ in true }, "job \(id)")
        }
    }
}
