import ComityCore
import Testing

/// SplitMix64: a small, seeded generator, so that every run checks the same pools and a failure can be replayed.
struct SplitMix64: RandomNumberGenerator {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite("Placer invariants on random pools")
struct PlacerPropertyTests {
    static let models: [(String, Int64)] = [
        ("NVIDIA H100 80GB HBM3", 80 << 30), ("NVIDIA A100-SXM4-40GB", 40 << 30), ("NVIDIA L4", 24 << 30),
        ("NVIDIA H100 PCIe", 80 << 30),
    ]
    static let requestedModels: [String?] = [nil, nil, nil, "h100", "H100", "a100", "L4", "pcie", "H200"]
    static let requestedGPUMemory: [Int64?] = [nil, nil, nil, 24 << 30, 40 << 30, 80 << 30, 96 << 30]

    static func randomPool(_ rng: inout SplitMix64) -> [HostAvailability] {
        (0..<Int.random(in: 0...6, using: &rng)).map { i in
            let gpuCount = [0, 0, 1, 2, 4, 8].randomElement(using: &rng)!
            let mixed = Bool.random(using: &rng)
            var gpus: [GPU] = []
            let main = models.randomElement(using: &rng)!
            for index in 0..<gpuCount {
                let (model, memory) = mixed ? models.randomElement(using: &rng)! : main
                gpus.append(GPU(index: index, uuid: "GPU-\(i)-\(index)", model: model, memoryBytes: memory))
            }
            // Some GPUs are busy; the free list comes in any order.
            let free = gpus.filter { _ in Int.random(in: 0..<4, using: &rng) != 0 }.shuffled(using: &rng)
            return HostAvailability(
                id: Int64(100 + i),
                freeCPUMillis: 500 * Int.random(in: 0...32, using: &rng),
                freeMemoryBytes: Int64(Int.random(in: 0...64, using: &rng)) << 30,
                freeGPUs: free,
                totalGPUs: gpuCount
            )
        }
    }

    static func randomJobs(_ rng: inout SplitMix64) -> [PendingJob] {
        (0..<Int.random(in: 0...20, using: &rng)).map { j in
            let gpus = [0, 0, 0, 1, 1, 2, 3, 4, 8].randomElement(using: &rng)!
            return PendingJob(
                id: Int64(1000 + j),
                resources: ResourceRequest(
                    cpuMillis: 250 * Int.random(in: 1...32, using: &rng),
                    memoryBytes: Int64(Int.random(in: 1...32, using: &rng)) << 29,
                    gpus: gpus,
                    gpuModel: gpus == 0 ? nil : requestedModels.randomElement(using: &rng)!,
                    gpuMemoryBytes: gpus == 0 ? nil : requestedGPUMemory.randomElement(using: &rng)!
                ),
                priority: Int.random(in: 0...100, using: &rng)
            )
        }
    }

    /// A host as the checker tracks it, independently of the Placer.
    struct Tracked {
        var cpu: Int
        var memory: Int64
        var free: [GPU]

        func matching(_ request: ResourceRequest) -> [Int] {
            free.filter { gpu in
                (request.gpuModel.map { gpu.model.lowercased().contains($0.lowercased()) } ?? true)
                    && (request.gpuMemoryBytes.map { gpu.memoryBytes >= $0 } ?? true)
            }.map(\.index).sorted()
        }

        func fits(_ request: ResourceRequest) -> Bool {
            cpu >= request.cpuMillis && memory >= request.memoryBytes && matching(request).count >= request.gpus
        }
    }

    @Test("invariants hold for seeded random pools and queues", arguments: [1, 2, 3, 4] as [UInt64])
    func invariants(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        var placedCount = 0
        var skippedCount = 0
        for round in 0..<100 {
            let pool = Self.randomPool(&rng)
            let jobs = Self.randomJobs(&rng)
            let placements = Placer.place(jobs, on: pool)
            let context = "seed \(seed) round \(round)"

            #expect(Placer.place(jobs, on: pool) == placements, "\(context): not deterministic")
            #expect(Set(placements.map(\.jobID)).count == placements.count, "\(context): a job placed twice")
            let jobIndex = Dictionary(uniqueKeysWithValues: jobs.enumerated().map { ($1.id, $0) })
            let order = try placements.map { try #require(jobIndex[$0.jobID], "\(context): unknown job \($0.jobID)") }
            #expect(order == order.sorted(), "\(context): placements out of job order")

            var tracked = Dictionary(
                uniqueKeysWithValues: pool.map {
                    ($0.id, Tracked(cpu: $0.freeCPUMillis, memory: $0.freeMemoryBytes, free: $0.freeGPUs))
                }
            )
            var usedGPUs: [Int64: Set<Int>] = [:]
            let byJob = Dictionary(uniqueKeysWithValues: placements.map { ($0.jobID, $0) })
            for job in jobs {
                let r = job.resources
                guard let placement = byJob[job.id] else {
                    skippedCount += 1
                    let fitting = tracked.filter { $0.value.fits(r) }.keys.sorted()
                    #expect(fitting.isEmpty, "\(context): job \(job.id) \(r) skipped though hosts \(fitting) fit")
                    continue
                }
                placedCount += 1
                var host = try #require(tracked[placement.hostID], "\(context): unknown host \(placement.hostID)")
                #expect(host.cpu >= r.cpuMillis, "\(context): job \(job.id) overcommits CPU")
                #expect(host.memory >= r.memoryBytes, "\(context): job \(job.id) overcommits memory")
                #expect(placement.gpuIndices.count == r.gpus, "\(context): job \(job.id) got the wrong GPU count")
                #expect(placement.gpuIndices == placement.gpuIndices.sorted(), "\(context): GPU indices not ascending")
                #expect(
                    placement.gpuIndices == Array(host.matching(r).prefix(r.gpus)),
                    "\(context): job \(job.id) did not get the lowest matching free GPUs"
                )
                for index in placement.gpuIndices {
                    let inserted = usedGPUs[placement.hostID, default: []].insert(index).inserted
                    #expect(inserted, "\(context): GPU \(index) given twice on host \(placement.hostID)")
                    #expect(host.free.contains { $0.index == index }, "\(context): GPU \(index) was not free")
                }
                // Documented best-fit rule: a CPU-only job goes to a host without GPUs when one fits.
                if r.gpus == 0, pool.contains(where: { $0.totalGPUs == 0 && tracked[$0.id]!.fits(r) }) {
                    #expect(
                        pool.first { $0.id == placement.hostID }!.totalGPUs == 0,
                        "\(context): CPU job on a GPU host"
                    )
                }
                host.cpu -= r.cpuMillis
                host.memory -= r.memoryBytes
                host.free.removeAll { placement.gpuIndices.contains($0.index) }
                tracked[placement.hostID] = host
            }
        }
        // The generator must exercise both outcomes, or the checks above prove little.
        #expect(placedCount > 100)
        #expect(skippedCount > 100)
    }

    @Test("the generator is reproducible")
    func generator() {
        var a = SplitMix64(seed: 42)
        var b = SplitMix64(seed: 42)
        var c = SplitMix64(seed: 43)
        let first = (0..<8).map { _ in a.next() }
        #expect(first == (0..<8).map { _ in b.next() })
        #expect(first != (0..<8).map { _ in c.next() })
        // Known first output of SplitMix64 for seed 0.
        var zero = SplitMix64(seed: 0)
        #expect(zero.next() == 0xE220_A839_7B1D_CDAF)
    }
}
