import ComityCore
import Testing

private let GiB: Int64 = 1 << 30
private let h100 = "NVIDIA H100 80GB HBM3"
private let a100 = "NVIDIA A100-SXM4-40GB"
private let l4 = "NVIDIA L4"

private func gpus(_ model: String, _ indices: [Int], memory: Int64 = 80 * GiB) -> [GPU] {
    indices.map { GPU(index: $0, uuid: "GPU-\(model.suffix(4))-\($0)", model: model, memoryBytes: memory) }
}

private func host(
    _ id: Int64,
    cpus: Int,
    memory: Int64 = 256 * GiB,
    gpus: [GPU] = [],
    total: Int? = nil
) -> HostAvailability {
    HostAvailability(
        id: id,
        freeCPUMillis: cpus * 1000,
        freeMemoryBytes: memory,
        freeGPUs: gpus,
        totalGPUs: total ?? gpus.count
    )
}

private func request(
    cpus: Int = 1,
    memory: Int64 = GiB,
    gpus: Int = 0,
    model: String? = nil,
    gpuMemory: Int64? = nil
) -> ResourceRequest {
    ResourceRequest(cpuMillis: cpus * 1000, memoryBytes: memory, gpus: gpus, gpuModel: model, gpuMemoryBytes: gpuMemory)
}

private func job(_ id: Int64, _ resources: ResourceRequest, priority: Int = 50) -> PendingJob {
    PendingJob(id: id, resources: resources, priority: priority)
}

@Suite("Placer.fit")
struct PlacerFitTests {
    static let mixed = host(
        1,
        cpus: 16,
        memory: 128 * GiB,
        gpus: gpus(a100, [0, 1], memory: 40 * GiB) + gpus(h100, [2, 3, 4]) + gpus(l4, [5], memory: 24 * GiB)
    )

    @Test(
        "what a request gets on one host",
        arguments: [
            ("CPU only", request(cpus: 4), [Int]?.some([])),
            ("all CPUs", request(cpus: 16), []),
            ("one CPU too many", request(cpus: 17), nil),
            ("half a CPU", ResourceRequest(cpuMillis: 500, memoryBytes: GiB), []),
            ("all memory", request(memory: 128 * GiB), []),
            ("one byte too many", request(memory: 128 * GiB + 1), nil),
            ("1 GPU, any model: lowest index", request(gpus: 1), [0]),
            ("all 6 GPUs", request(gpus: 6), [0, 1, 2, 3, 4, 5]),
            ("7 GPUs", request(gpus: 7), nil),
            ("h100 lowercase matches the full name", request(gpus: 2, model: "h100"), [2, 3]),
            ("H100 exact case", request(gpus: 3, model: "H100"), [2, 3, 4]),
            ("4 H100 but only 3", request(gpus: 4, model: "H100"), nil),
            ("model substring 'nvidia a100'", request(gpus: 1, model: "nvidia a100"), [0]),
            ("model 'sxm4'", request(gpus: 2, model: "SXM4"), [0, 1]),
            ("model 'L4'", request(gpus: 1, model: "l4"), [5]),
            ("model 'H200' absent", request(gpus: 1, model: "H200"), nil),
            ("gpu memory 80Gi: only the H100s", request(gpus: 2, gpuMemory: 80 * GiB), [2, 3]),
            ("gpu memory 40Gi: A100s and H100s", request(gpus: 4, gpuMemory: 40 * GiB), [0, 1, 2, 3]),
            ("gpu memory 24Gi: every GPU", request(gpus: 6, gpuMemory: 24 * GiB), [0, 1, 2, 3, 4, 5]),
            ("gpu memory 81Gi: none", request(gpus: 1, gpuMemory: 81 * GiB), nil),
            ("model and memory both", request(gpus: 1, model: "A100", gpuMemory: 80 * GiB), nil),
            ("GPUs fit but CPUs do not", request(cpus: 32, gpus: 1), nil),
            ("GPUs fit but memory does not", request(memory: 256 * GiB, gpus: 1), nil),
        ] as [(String, ResourceRequest, [Int]?)]
    )
    func fit(label: String, request: ResourceRequest, expected: [Int]?) {
        #expect(Placer.fit(request, on: Self.mixed) == expected, "\(label)")
    }

    @Test("GPU indices come lowest first whatever the order of the free list")
    func lowestFirst() {
        let scrambled = host(1, cpus: 8, gpus: gpus(h100, [7, 3, 5, 1]), total: 8)
        #expect(Placer.fit(request(gpus: 2), on: scrambled) == [1, 3])
        #expect(Placer.fit(request(gpus: 4), on: scrambled) == [1, 3, 5, 7])
        #expect(Placer.fit(request(gpus: 5), on: scrambled) == nil)
    }

    @Test("a host with no GPUs fits CPU jobs only")
    func noGPUs() {
        let cpuHost = host(1, cpus: 8)
        #expect(Placer.fit(request(cpus: 8), on: cpuHost) == [])
        #expect(Placer.fit(request(gpus: 1), on: cpuHost) == nil)
    }

    @Test(
        "ResourceRequest.accepts",
        arguments: [
            (request(gpus: 1), GPU(index: 0, uuid: "", model: "anything", memoryBytes: 0), true),
            (request(gpus: 1, model: "h100"), GPU(index: 0, uuid: "", model: h100, memoryBytes: 80 * GiB), true),
            (request(gpus: 1, model: "H100 80GB"), GPU(index: 0, uuid: "", model: h100, memoryBytes: 80 * GiB), true),
            (request(gpus: 1, model: "H100"), GPU(index: 0, uuid: "", model: a100, memoryBytes: 40 * GiB), false),
            (request(gpus: 1, gpuMemory: 40 * GiB), GPU(index: 0, uuid: "", model: a100, memoryBytes: 40 * GiB), true),
            (
                request(gpus: 1, gpuMemory: 40 * GiB + 1), GPU(index: 0, uuid: "", model: a100, memoryBytes: 40 * GiB),
                false
            ),
        ] as [(ResourceRequest, GPU, Bool)]
    )
    func accepts(request: ResourceRequest, gpu: GPU, expected: Bool) {
        #expect(request.accepts(gpu) == expected)
    }
}

@Suite("Placer.place")
struct PlacerPlaceTests {
    @Test("no jobs or no hosts place nothing")
    func empty() {
        #expect(Placer.place([], on: [host(1, cpus: 8)]).isEmpty)
        #expect(Placer.place([job(1, request())], on: []).isEmpty)
    }

    @Test("capacity is consumed across jobs in one pass")
    func consumesCapacity() {
        let jobs = (1...3).map { job($0, request(cpus: 4)) }
        let placements = Placer.place(jobs, on: [host(10, cpus: 8)])
        #expect(
            placements == [
                Placement(jobID: 1, hostID: 10, gpuIndices: []), Placement(jobID: 2, hostID: 10, gpuIndices: []),
            ]
        )
    }

    @Test("memory is consumed across jobs too")
    func consumesMemory() {
        let jobs = (1...3).map { job($0, request(cpus: 1, memory: 40 * GiB)) }
        #expect(Placer.place(jobs, on: [host(10, cpus: 64, memory: 100 * GiB)]).map(\.jobID) == [1, 2])
    }

    @Test("two jobs on one host never get the same GPU")
    func distinctGPUs() {
        let pool = [host(10, cpus: 64, gpus: gpus(h100, [0, 1, 2, 3]))]
        let jobs = [
            job(1, request(gpus: 2)), job(2, request(gpus: 1)), job(3, request(gpus: 1)), job(4, request(gpus: 1)),
        ]
        #expect(
            Placer.place(jobs, on: pool) == [
                Placement(jobID: 1, hostID: 10, gpuIndices: [0, 1]),
                Placement(jobID: 2, hostID: 10, gpuIndices: [2]),
                Placement(jobID: 3, hostID: 10, gpuIndices: [3]),
            ]
        )
    }

    @Test("earlier jobs come first")
    func order() {
        let pool = [host(10, cpus: 64, gpus: gpus(h100, [0]))]
        let first = Placer.place([job(1, request(gpus: 1)), job(2, request(gpus: 1))], on: pool)
        #expect(first == [Placement(jobID: 1, hostID: 10, gpuIndices: [0])])
        let second = Placer.place([job(2, request(gpus: 1)), job(1, request(gpus: 1))], on: pool)
        #expect(second == [Placement(jobID: 2, hostID: 10, gpuIndices: [0])])
    }

    @Test("placements come out in job order")
    func outputOrder() {
        let pool = [host(10, cpus: 8), host(20, cpus: 8, gpus: gpus(l4, [0, 1]))]
        let jobs = [
            job(5, request(gpus: 1)), job(3, request(cpus: 2)), job(9, request(gpus: 1)), job(1, request(cpus: 2)),
        ]
        #expect(Placer.place(jobs, on: pool).map(\.jobID) == [5, 3, 9, 1])
    }

    @Test("a job that fits nowhere is skipped and a later smaller one is placed")
    func skipBig() {
        let pool = [host(10, cpus: 8, gpus: gpus(a100, [0, 1], memory: 40 * GiB))]
        let jobs = [
            job(1, request(cpus: 16)),
            job(2, request(gpus: 1, model: "H100")),
            job(3, request(gpus: 3)),
            job(4, request(gpus: 1, gpuMemory: 80 * GiB)),
            job(5, request(cpus: 2, gpus: 1)),
            job(6, request(cpus: 6)),
            job(7, request(cpus: 1)),
        ]
        #expect(
            Placer.place(jobs, on: pool) == [
                Placement(jobID: 5, hostID: 10, gpuIndices: [0]),
                Placement(jobID: 6, hostID: 10, gpuIndices: []),
            ]
        )
    }

    @Test("a 1-GPU job prefers a host with 1 free matching GPU over one with 8", arguments: [false, true])
    func bestFitGPU(reversed: Bool) {
        let big = host(10, cpus: 64, gpus: gpus(h100, Array(0..<8)))
        let small = host(20, cpus: 64, gpus: gpus(h100, [3]), total: 4)
        let pool = reversed ? [small, big] : [big, small]
        #expect(
            Placer.place([job(1, request(gpus: 1, model: "h100"))], on: pool) == [
                Placement(jobID: 1, hostID: 20, gpuIndices: [3])
            ]
        )
        // An 8-GPU job still gets the big host, and a second 1-GPU job after the first goes to the big host.
        let jobs = [job(1, request(gpus: 1)), job(2, request(gpus: 1)), job(3, request(gpus: 7))]
        #expect(
            Placer.place(jobs, on: pool) == [
                Placement(jobID: 1, hostID: 20, gpuIndices: [3]),
                Placement(jobID: 2, hostID: 10, gpuIndices: [0]),
                Placement(jobID: 3, hostID: 10, gpuIndices: [1, 2, 3, 4, 5, 6, 7]),
            ]
        )
    }

    @Test("a GPU job goes to the host with fewest free GPUs that still fit")
    func bestFitGPUs() {
        let pool = [
            host(10, cpus: 64, gpus: gpus(h100, Array(0..<8))),
            host(20, cpus: 64, gpus: gpus(h100, [0, 1, 2, 3])),
            host(30, cpus: 64, gpus: gpus(h100, [0])),
            host(40, cpus: 64, gpus: gpus(h100, [0, 1])),
        ]
        #expect(Placer.place([job(1, request(gpus: 2))], on: pool).map(\.hostID) == [40])
        #expect(Placer.place([job(1, request(gpus: 3))], on: pool).map(\.hostID) == [20])
        #expect(Placer.place([job(1, request(gpus: 5))], on: pool).map(\.hostID) == [10])
    }

    @Test("a GPU job skips a best-fit host whose GPUs do not match")
    func bestFitMatching() {
        let pool = [
            host(10, cpus: 64, gpus: gpus(h100, Array(0..<8))),
            host(20, cpus: 64, gpus: gpus(l4, [0], memory: 24 * GiB)),
        ]
        #expect(Placer.place([job(1, request(gpus: 1, model: "H100"))], on: pool).map(\.hostID) == [10])
        #expect(Placer.place([job(1, request(gpus: 1, gpuMemory: 40 * GiB))], on: pool).map(\.hostID) == [10])
        #expect(Placer.place([job(1, request(gpus: 1, model: "l4"))], on: pool).map(\.hostID) == [20])
    }

    @Test("a CPU-only job prefers a host without GPUs", arguments: [false, true])
    func cpuJobAvoidsGPUHosts(reversed: Bool) {
        let gpuHost = host(10, cpus: 64, gpus: gpus(h100, Array(0..<8)))
        let cpuHost = host(20, cpus: 8)
        let pool = reversed ? [cpuHost, gpuHost] : [gpuHost, cpuHost]
        #expect(Placer.place([job(1, request(cpus: 4))], on: pool) == [Placement(jobID: 1, hostID: 20, gpuIndices: [])])
        // When the CPU host is full, the GPU host takes the job.
        #expect(
            Placer.place([job(1, request(cpus: 8)), job(2, request(cpus: 4))], on: pool) == [
                Placement(jobID: 1, hostID: 20, gpuIndices: []), Placement(jobID: 2, hostID: 10, gpuIndices: []),
            ]
        )
    }

    @Test("a CPU-only job avoids a GPU host even when all its GPUs are busy")
    func cpuJobAvoidsBusyGPUHost() {
        let pool = [host(10, cpus: 16, gpus: [], total: 8), host(20, cpus: 32)]
        #expect(Placer.place([job(1, request(cpus: 4))], on: pool).map(\.hostID) == [20])
    }

    @Test("among hosts without GPUs, a CPU job goes where the least CPU is left, then the least memory")
    func cpuLeastWaste() {
        let pool = [host(10, cpus: 32), host(20, cpus: 8), host(30, cpus: 16)]
        #expect(Placer.place([job(1, request(cpus: 4))], on: pool).map(\.hostID) == [20])
        #expect(Placer.place([job(1, request(cpus: 12))], on: pool).map(\.hostID) == [30])
        let memoryPool = [
            host(10, cpus: 8, memory: 64 * GiB), host(20, cpus: 8, memory: 16 * GiB),
            host(30, cpus: 8, memory: 32 * GiB),
        ]
        #expect(Placer.place([job(1, request(cpus: 4, memory: 8 * GiB))], on: memoryPool).map(\.hostID) == [20])
    }

    @Test("the same input gives the same output")
    func deterministic() {
        let pool = [
            host(10, cpus: 8, memory: 32 * GiB, gpus: gpus(h100, [0, 1])),
            host(20, cpus: 8, memory: 32 * GiB, gpus: gpus(h100, [0, 1])),
            host(30, cpus: 8, memory: 32 * GiB),
            host(40, cpus: 8, memory: 32 * GiB),
        ]
        let jobs = (1...12).map { job(Int64($0), request(cpus: 2, memory: 4 * GiB, gpus: $0 % 3 == 0 ? 1 : 0)) }
        let first = Placer.place(jobs, on: pool)
        for _ in 0..<20 { #expect(Placer.place(jobs, on: pool) == first) }
        // Hosts that tie go to the one listed first.
        #expect(Placer.place([job(1, request(cpus: 1))], on: pool).map(\.hostID) == [30])
        #expect(Placer.place([job(1, request(gpus: 1))], on: pool).map(\.hostID) == [10])
    }

    /// The doc comment of `Placer` (Placement.swift:50) says a GPU job goes to "the host whose *matching* free GPUs are
    /// fewest", but `bestHost` (Placement.swift:83) counts *all* free GPUs. A 1-H100 job then takes one of two H100s on
    /// a dedicated host rather than the only H100 on a host whose other free GPUs it cannot use.
    @Test("best fit counts the free GPUs that match the request")
    func bestFitCountsMatching() {
        let mixed = host(10, cpus: 64, gpus: gpus(h100, [0]) + gpus(l4, [1, 2, 3, 4, 5, 6, 7], memory: 24 * GiB))
        let twoH100 = host(20, cpus: 64, gpus: gpus(h100, [0, 1]))
        let placements = Placer.place([job(1, request(gpus: 1, model: "H100"))], on: [mixed, twoH100])
        #expect(placements.map(\.hostID) == [10])
    }
}
