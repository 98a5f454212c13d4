import ComityCore
import Foundation
import Testing

/// Unit tests of fair sharing's arithmetic: decay, GPU weights, entitlements, standings, the fair-share queue,
/// quotas and reclaim victims. (Borrowing and lending limits are enforced by the store; they are tested there.)
@Suite("Sharing arithmetic")
struct SharingArithmeticTests {}

private let GiB: Int64 = 1 << 30
private let h100 = "NVIDIA H100 80GB HBM3"

private func gpus(_ indices: [Int], model: String = h100) -> [GPU] {
    indices.map { GPU(index: $0, uuid: "GPU-\($0)", model: model, memoryBytes: 80 * GiB) }
}

private func gpu(_ count: Double) -> ShareVector { ShareVector(gpu: count, cpu: 0, memory: 0) }

private func isClose(_ a: Double, _ b: Double, _ tolerance: Double = 1e-12) -> Bool { abs(a - b) <= tolerance }

private func isClose(_ a: ShareVector, _ b: ShareVector, _ tolerance: Double = 1e-12) -> Bool {
    ResourceKind.allCases.allSatisfy { isClose(a[$0], b[$0], tolerance) }
}

// MARK: - Decay

extension SharingArithmeticTests {
    @Suite("Decay")
    struct DecayTests {
        static let hour = 3600.0

        @Test("half after one half-life, a quarter after two, whole at zero elapsed")
        func factor() {
            #expect(Decay.factor(elapsedSeconds: Self.hour, halfLifeSeconds: Self.hour) == 0.5)
            #expect(Decay.factor(elapsedSeconds: 2 * Self.hour, halfLifeSeconds: Self.hour) == 0.25)
            #expect(Decay.factor(elapsedSeconds: 0, halfLifeSeconds: Self.hour) == 1)
            #expect(isClose(Decay.factor(elapsedSeconds: 0.5 * Self.hour, halfLifeSeconds: Self.hour), 0.5.squareRoot()))
        }

        @Test("time running backwards does not inflate a total; a zero half-life forgets everything")
        func edges() {
            #expect(Decay.factor(elapsedSeconds: -60, halfLifeSeconds: Self.hour) == 1)
            #expect(Decay.factor(elapsedSeconds: 1, halfLifeSeconds: 0) == 0)
            #expect(Decay.factor(elapsedSeconds: 0, halfLifeSeconds: 0) == 1)
        }

        @Test("advance decays every kind of the old total and adds the new amount undecayed")
        func advance() {
            let total = ShareVector(gpu: 8, cpu: 4, memory: 2)
            let advanced = Decay.advance(total, elapsedSeconds: Self.hour, halfLifeSeconds: Self.hour, adding: ShareVector(gpu: 1, cpu: 1, memory: 1))
            #expect(advanced == ShareVector(gpu: 5, cpu: 3, memory: 2))
        }

        @Test("decaying in two steps equals decaying once over the whole time")
        func composes() {
            let total = ShareVector(gpu: 123.4, cpu: 56.7, memory: 8.9)
            let once = Decay.advance(total, elapsedSeconds: 5000, halfLifeSeconds: 7200, adding: .zero)
            let twice = Decay.advance(
                Decay.advance(total, elapsedSeconds: 1234, halfLifeSeconds: 7200, adding: .zero), elapsedSeconds: 3766, halfLifeSeconds: 7200,
                adding: .zero)
            #expect(isClose(once, twice, 1e-9))
        }

        /// Holding `rate` GPUs for `duration`, accounted every `tick` seconds.
        @Test("usage accrued by many small ticks matches the closed form")
        func accrual() {
            let rate = 3.0
            let halfLife = 2 * Self.hour
            let tick = 1.0
            let ticks = 4 * 3600
            var total = ShareVector.zero
            for _ in 0..<ticks {
                total = Decay.advance(total, elapsedSeconds: tick, halfLifeSeconds: halfLife, adding: gpu(rate * tick))
            }
            // Exactly the geometric series the ticks sum up: r·dt·(1 − fⁿ)/(1 − f), f the decay of one tick.
            let f = exp2(-tick / halfLife)
            let series = rate * tick * (1 - pow(f, Double(ticks))) / (1 - f)
            #expect(abs(total.gpu - series) / series < 1e-6, "\(total.gpu) vs \(series)")
            // The continuous integral r·h/ln2·(1 − 2^(−T/h)); counting each tick's addition as recent overstates it by
            // about ln2·dt/(2h) relative (5e-5 here), so the bound is ln2·dt/h.
            let integral = rate * halfLife / M_LN2 * (1 - exp2(-Double(ticks) * tick / halfLife))
            #expect(abs(total.gpu - integral) / integral < M_LN2 * tick / halfLife, "\(total.gpu) vs \(integral)")
            #expect(total.gpu > integral)
        }

        @Test("a steady rate converges to rate × half-life / ln 2")
        func steadyState() {
            var total = ShareVector.zero
            for _ in 0..<(48 * 60) {
                total = Decay.advance(total, elapsedSeconds: 60, halfLifeSeconds: 3600, adding: gpu(2 * 60))
            }
            let limit = 2 * 3600 / M_LN2
            #expect(abs(total.gpu - limit) / limit < 0.01)
        }
    }
}

// MARK: - GPU weights

extension SharingArithmeticTests {
    @Suite("GPUWeights")
    struct GPUWeightsTests {
        static let weights = GPUWeights(["H100": 2, "h100 nvl": 2.5, "A100": 1.5])

        @Test(
            "the longest matching pattern wins, case-insensitively; an unmatched model weighs 1",
            arguments: [
                ("NVIDIA H100 NVL", 2.5),
                ("nvidia h100 nvl 94gb", 2.5),
                ("NVIDIA H100 80GB HBM3", 2),
                ("nvidia h100 pcie", 2),
                ("NVIDIA A100-SXM4-40GB", 1.5),
                ("NVIDIA L4", 1),
                ("", 1),
            ] as [(String, Double)]
        )
        func weight(model: String, expected: Double) {
            #expect(Self.weights.weight(of: model) == expected)
        }

        @Test("the longest pattern wins whatever order the admin gave them in")
        func longestRegardlessOfInsertion() {
            for _ in 0..<20 {
                // Dictionaries iterate in a per-process random order; build several to shake the order.
                let weights = GPUWeights(["a": 7, "h2": 3, "h100": 2, "h100 s": 4, "nvidia h100 sxm": 5])
                #expect(weights.weight(of: "NVIDIA H100 SXM5") == 5)
                #expect(weights.weight(of: "NVIDIA H100 PCIe") == 2)
                #expect(weights.weight(of: "NVIDIA H200") == 3)
                #expect(weights.weight(of: "Radeon MI300") == 7)
            }
        }

        @Test(
            "patterns that differ only in case resolve the same way whatever the dictionary's order"
        )
        func caseDuplicates() {
            // gpu_weights.pattern is case-sensitive, so an admin can store both; iteration order changes with capacity.
            var answers: Set<Double> = []
            var equal = true
            let reference = GPUWeights(["H100": 2, "h100": 3])
            for capacity in 1...64 {
                var weights = [String: Double](minimumCapacity: capacity)
                weights["h100"] = 3
                weights["H100"] = 2
                answers.insert(GPUWeights(weights).weight(of: h100))
                equal = equal && GPUWeights(weights) == reference
            }
            #expect(answers.count == 1, "weights seen: \(answers.sorted())")
            #expect(equal)
        }

        @Test("no weights: every GPU weighs 1")
        func empty() {
            #expect(GPUWeights().weight(of: h100) == 1)
            #expect(GPUWeights().weighted(gpus([0, 1, 2])) == 3)
        }

        @Test("weighted sums the weights of the GPUs")
        func weighted() {
            let mixed =
                gpus([0, 1], model: "NVIDIA H100 80GB HBM3") + gpus([2], model: "NVIDIA H100 NVL") + gpus([3], model: "NVIDIA A100-SXM4-40GB")
                + gpus([4], model: "NVIDIA L4")
            #expect(Self.weights.weighted(mixed) == 2 + 2 + 2.5 + 1.5 + 1)
            #expect(Self.weights.weighted([GPU]()) == 0)
        }

        @Test("a request's vector counts weighted GPUs, cores and GiB")
        func vector() {
            let vector = ShareVector(cpuMillis: 2500, memoryBytes: 3 * GiB, weightedGPUs: 4.5)
            #expect(vector == ShareVector(gpu: 4.5, cpu: 2.5, memory: 3))
        }
    }
}

// MARK: - Entitlements

extension SharingArithmeticTests {
    @Suite("Entitlements.compute")
    struct EntitlementsTests {
        @Test("without grants, each pool is divided in proportion to contribution")
        func pureContribution() {
            let result = Entitlements.compute(
                contributions: [
                    1: ShareVector(gpu: 8, cpu: 64, memory: 512), 2: ShareVector(gpu: 4, cpu: 64, memory: 256),
                    3: ShareVector(gpu: 2, cpu: 128, memory: 256),
                ], grants: [])
            #expect(isClose(result[1]!, ShareVector(gpu: 8.0 / 14, cpu: 0.25, memory: 0.5)))
            #expect(isClose(result[2]!, ShareVector(gpu: 4.0 / 14, cpu: 0.25, memory: 0.25)))
            #expect(isClose(result[3]!, ShareVector(gpu: 2.0 / 14, cpu: 0.5, memory: 0.25)))
        }

        @Test("grants come off the top; contributors share the rest")
        func grantsOffTheTop() {
            let result = Entitlements.compute(
                contributions: [1: ShareVector(gpu: 50, cpu: 50, memory: 0), 2: ShareVector(gpu: 30, cpu: 30, memory: 0), 3: gpu(20)],
                grants: [Grant(partnerID: 4, kind: .gpu, fraction: 0.1)])
            #expect(Set(result.keys) == [1, 2, 3, 4])
            #expect(isClose(result[1]!.gpu, 0.45))
            #expect(isClose(result[2]!.gpu, 0.27))
            #expect(isClose(result[3]!.gpu, 0.18))
            #expect(isClose(result[4]!.gpu, 0.10))
            #expect(isClose(result.values.reduce(0) { $0 + $1.gpu }, 1))
            // A GPU grant implies the same fraction of the CPU and memory pools (what its GPU jobs need): 10% of the CPU
            // pool comes off the top, its contributors share the rest; nobody contributed memory, so the grantee's
            // implied 10% is all of it that anyone is entitled to.
            #expect(isClose(result[1]!.cpu, 0.9 * 0.625))
            #expect(isClose(result[2]!.cpu, 0.9 * 0.375))
            #expect(result[3]!.cpu == 0)
            #expect(isClose(result[4]!.cpu, 0.1))
            #expect(isClose(result[4]!.memory, 0.1))
            #expect([1, 2, 3].allSatisfy { result[$0]!.memory == 0 })
        }

        @Test("a contributor's grant adds to its contribution share")
        func grantToContributor() {
            let result = Entitlements.compute(contributions: [1: gpu(3), 2: gpu(1)], grants: [Grant(partnerID: 2, kind: .gpu, fraction: 0.2)])
            #expect(isClose(result[1]!.gpu, 0.6))
            #expect(isClose(result[2]!.gpu, 0.4))
        }

        @Test("grants adding up to more than the pool are scaled down together; contributors get nothing")
        func oversubscribedGrants() {
            let result = Entitlements.compute(
                contributions: [1: gpu(10)],
                grants: [
                    Grant(partnerID: 4, kind: .gpu, fraction: 0.8), Grant(partnerID: 5, kind: .gpu, fraction: 0.3),
                    Grant(partnerID: 5, kind: .gpu, fraction: 0.1),
                ])
            #expect(isClose(result[4]!.gpu, 2.0 / 3))
            #expect(isClose(result[5]!.gpu, 1.0 / 3))
            #expect(isClose(result[1]!.gpu, 0))
            #expect(isClose(result.values.reduce(0) { $0 + $1.gpu }, 1))
        }

        @Test("grants of exactly the whole pool leave contributors nothing")
        func wholePoolGranted() {
            let result = Entitlements.compute(contributions: [1: gpu(10)], grants: [Grant(partnerID: 4, kind: .gpu, fraction: 1)])
            #expect(result[4]!.gpu == 1)
            #expect(result[1]!.gpu == 0)
        }

        @Test("a kind nobody contributes gives only the grants; the rest of it is nobody's")
        func kindWithoutContribution() {
            // Explicit grants of every kind (a grant of one kind alone implies the others).
            let result = Entitlements.compute(
                contributions: [1: gpu(8), 2: gpu(8)],
                grants: [
                    Grant(partnerID: 4, kind: .memory, fraction: 0.25), Grant(partnerID: 4, kind: .gpu, fraction: 0),
                    Grant(partnerID: 4, kind: .cpu, fraction: 0),
                ])
            #expect(result[4]! == ShareVector(gpu: 0, cpu: 0, memory: 0.25))
            #expect(result[1]! == ShareVector(gpu: 0.5, cpu: 0, memory: 0))
            #expect(result[2]! == ShareVector(gpu: 0.5, cpu: 0, memory: 0))
        }

        @Test("a grant of one pool implies the same fraction of the pools not granted explicitly")
        func impliedGrants() {
            let result = Entitlements.compute(
                contributions: [1: ShareVector(gpu: 8, cpu: 64, memory: 512)],
                grants: [Grant(partnerID: 4, kind: .gpu, fraction: 0.1), Grant(partnerID: 4, kind: .memory, fraction: 0.05)])
            #expect(isClose(result[4]!.gpu, 0.1))
            #expect(isClose(result[4]!.cpu, 0.1))  // implied by the largest explicit grant
            #expect(isClose(result[4]!.memory, 0.05))  // explicit
            #expect(isClose(result[1]!.cpu, 0.9) && isClose(result[1]!.memory, 0.95))
        }

        @Test("partners absent from contributions and grants get nothing; listed with nothing, they get zero")
        func absentPartners() {
            let result = Entitlements.compute(contributions: [1: gpu(8), 2: .zero], grants: [Grant(partnerID: 3, kind: .gpu, fraction: 0)])
            #expect(result[99] == nil)
            #expect(result[2] == .zero)
            #expect(result[3] == .zero)
            #expect(result[1]!.gpu == 1)
        }

        @Test("negative contributions and grants count as none")
        func negatives() {
            let result = Entitlements.compute(contributions: [1: gpu(8), 2: gpu(-4)], grants: [Grant(partnerID: 3, kind: .gpu, fraction: -0.5)])
            #expect(result[1]!.gpu == 1)
            #expect(result[2]!.gpu == 0)
            #expect(result[3]!.gpu == 0)
        }

        @Test("nothing in, nothing out")
        func empty() {
            #expect(Entitlements.compute(contributions: [:], grants: []).isEmpty)
        }
    }
}

// MARK: - Standing

extension SharingArithmeticTests {
    @Suite("ShareStanding")
    struct ShareStandingTests {
        /// 10 GPUs, 100 cores, 1000 GiB.
        static let capacity = ShareVector(gpu: 10, cpu: 100, memory: 1000)
        static let half = ShareVector(gpu: 0.5, cpu: 0.5, memory: 0.5)

        @Test(
            "ratio is half current holdings and half decayed usage over the entitlement",
            arguments: [
                // (held GPUs, used share, ratio)
                (0.0, 0.0, 0.0),
                (2, 0.2, 0.4),  // under
                (5, 0.5, 1.0),  // at
                (8, 0.8, 1.6),  // over
                (0, 0.5, 0.5),  // history only
                (5, 0, 0.5),  // holdings only
                (10, 0.2, 1.2),
            ] as [(Double, Double, Double)]
        )
        func ratio(held: Double, used: Double, expected: Double) {
            let standing = ShareStanding(entitled: Self.half, usedShare: gpu(used), allocated: gpu(held))
            #expect(isClose(standing.ratio(capacity: Self.capacity), expected))
            #expect(isClose(standing.factor(capacity: Self.capacity), exp2(-expected)))
        }

        @Test("the factor is 1 with nothing used, 0.5 at the entitlement, towards 0 above")
        func factor() {
            #expect(ShareStanding(entitled: Self.half).factor(capacity: Self.capacity) == 1)
            let at = ShareStanding(entitled: Self.half, usedShare: gpu(0.5), allocated: gpu(5))
            #expect(isClose(at.factor(capacity: Self.capacity), 0.5))
            let far = ShareStanding(entitled: Self.half, usedShare: gpu(1), allocated: gpu(10))
            #expect(isClose(far.factor(capacity: Self.capacity), 0.25))
        }

        @Test("heldRatio ignores history: under, at and over the entitlement")
        func heldRatio() {
            #expect(isClose(ShareStanding(entitled: Self.half, usedShare: gpu(0.9), allocated: gpu(2)).heldRatio(capacity: Self.capacity), 0.4))
            #expect(isClose(ShareStanding(entitled: Self.half, allocated: gpu(5)).heldRatio(capacity: Self.capacity), 1))
            #expect(isClose(ShareStanding(entitled: Self.half, allocated: gpu(7)).heldRatio(capacity: Self.capacity), 1.4))
            #expect(ShareStanding(entitled: Self.half, usedShare: gpu(0.9)).heldRatio(capacity: Self.capacity) == 0)
        }

        @Test("the dominant kind counts")
        func dominantKind() {
            let cpuHeavy = ShareStanding(entitled: Self.half, allocated: ShareVector(gpu: 1, cpu: 60, memory: 100))
            #expect(isClose(cpuHeavy.ratio(capacity: Self.capacity), 0.6))
            #expect(isClose(cpuHeavy.heldRatio(capacity: Self.capacity), 1.2))
            let memoryHistory = ShareStanding(entitled: Self.half, usedShare: ShareVector(gpu: 0.1, cpu: 0.1, memory: 0.9), allocated: gpu(1))
            #expect(isClose(memoryHistory.ratio(capacity: Self.capacity), 0.9))
        }

        @Test("a kind's entitlement weighs that kind: 10% of CPUs against 50% of GPUs")
        func perKindEntitlement() {
            let standing = ShareStanding(entitled: ShareVector(gpu: 0.5, cpu: 0.1, memory: 0.5), allocated: ShareVector(gpu: 2, cpu: 10, memory: 0))
            // GPU: 0.5·0.2/0.5 = 0.2; CPU: 0.5·0.1/0.1 = 0.5.
            #expect(isClose(standing.ratio(capacity: Self.capacity), 0.5))
        }

        @Test("holding without entitlement gives a huge ratio, still ordered by how much")
        func zeroEntitlement() {
            let one = ShareStanding(entitled: .zero, allocated: gpu(1))
            let two = ShareStanding(entitled: .zero, allocated: gpu(2))
            #expect(one.ratio(capacity: Self.capacity) > 1e6)
            #expect(two.ratio(capacity: Self.capacity) > one.ratio(capacity: Self.capacity))
            #expect(one.heldRatio(capacity: Self.capacity) > 1e6)
            #expect(one.factor(capacity: Self.capacity) == 0)
            // Even history alone without entitlement ranks above anyone within theirs.
            let history = ShareStanding(entitled: .zero, usedShare: gpu(0.01))
            #expect(history.ratio(capacity: Self.capacity) > ShareStanding(entitled: Self.half, allocated: gpu(10)).ratio(capacity: Self.capacity))
        }

        @Test("holdsEntitlement: at or above the entitlement, or entitled to nothing")
        func holdsEntitlement() {
            #expect(ShareStanding(entitled: Self.half, allocated: gpu(5)).holdsEntitlement(capacity: Self.capacity))
            #expect(ShareStanding(entitled: Self.half, allocated: gpu(6)).holdsEntitlement(capacity: Self.capacity))
            #expect(!ShareStanding(entitled: Self.half, usedShare: gpu(0.9), allocated: gpu(4)).holdsEntitlement(capacity: Self.capacity))
            #expect(ShareStanding(entitled: .zero).holdsEntitlement(capacity: Self.capacity))
            #expect(ShareStanding(entitled: .zero, allocated: gpu(1)).holdsEntitlement(capacity: Self.capacity))
            // Entitled to CPUs only, holding none: below.
            #expect(!ShareStanding(entitled: ShareVector(gpu: 0, cpu: 0.1, memory: 0)).holdsEntitlement(capacity: Self.capacity))
        }

        @Test("holdings of a kind the pool does not have count as nothing")
        func emptyPool() {
            let standing = ShareStanding(entitled: Self.half, allocated: ShareVector(gpu: 3, cpu: 0, memory: 0))
            #expect(standing.ratio(capacity: ShareVector(gpu: 0, cpu: 100, memory: 1000)) == 0)
        }
    }
}

// MARK: - Fair-share queue

/// Drains a queue: `place` says what a job would hold if it is placed, or `nil`; returns job ids in the order
/// considered, and those placed.
private func drain(
    _ queue: inout FairShareQueue, _ jobs: [PendingJob], limit: Int = .max, place: (PendingJob) -> ShareVector? = { _ in gpu(1) }
) -> (considered: [Int64], placed: [Int64]) {
    var considered: [Int64] = []
    var placed: [Int64] = []
    while considered.count < limit, let index = queue.next() {
        let holding = place(jobs[index])
        considered.append(jobs[index].id)
        if holding != nil { placed.append(jobs[index].id) }
        queue.record(index, holding: holding)
    }
    return (considered, placed)
}

private func pending(_ id: Int64, partner: Int64, project: Int64? = nil, priority: Int = 50, cpus: Int = 1, gpus: Int = 1) -> PendingJob {
    PendingJob(
        id: id, resources: ResourceRequest(cpuMillis: cpus * 1000, memoryBytes: GiB, gpus: gpus), priority: priority, partnerID: partner,
        projectID: project ?? partner * 100)
}

extension SharingArithmeticTests {
    @Suite("FairShareQueue")
    struct FairShareQueueTests {
        static let capacity = ShareVector(gpu: 10, cpu: 100, memory: 1000)
        static let half = ShareVector(gpu: 0.5, cpu: 0.5, memory: 0.5)
        /// Projects entitled to all of their partner's share, nothing used.
        static func projects(_ jobs: [PendingJob]) -> [Int64: ShareStanding] {
            Dictionary(jobs.map { ($0.projectID, ShareStanding(entitled: ShareVector(gpu: 1, cpu: 1, memory: 1))) }, uniquingKeysWith: { a, _ in a })
        }

        @Test("the partner furthest below its entitlement goes first, whatever its job ids")
        func belowEntitlementFirst() {
            let jobs = [pending(1, partner: 1), pending(2, partner: 1), pending(3, partner: 2)]
            let partners: [Int64: ShareStanding] = [
                1: ShareStanding(entitled: Self.half, usedShare: gpu(0.7)), 2: ShareStanding(entitled: Self.half, usedShare: gpu(0.3)),
            ]
            var queue = FairShareQueue(jobs: jobs, partners: partners, projects: Self.projects(jobs), capacity: Self.capacity)
            #expect(drain(&queue, jobs, place: { _ in nil }).considered == [3, 1, 2])
        }

        @Test("placements re-key partners: one pass interleaves two equal partners")
        func interleaves() {
            let jobs = (1...4).map { pending($0, partner: 1) } + (5...8).map { pending($0, partner: 2) }
            let partners: [Int64: ShareStanding] = [1: ShareStanding(entitled: Self.half), 2: ShareStanding(entitled: Self.half)]
            var queue = FairShareQueue(jobs: jobs, partners: partners, projects: Self.projects(jobs), capacity: Self.capacity)
            #expect(drain(&queue, jobs).considered == [1, 5, 2, 6, 3, 7, 4, 8])
            #expect(queue.partners[1]!.allocated == gpu(4))
            #expect(queue.partners[2]!.allocated == gpu(4))
            #expect(queue.projects[100]!.allocated == gpu(4))
        }

        @Test("placements follow entitlements: 3:1 entitlements give 6 and 2 of the first 8")
        func proportional() {
            let jobs = (1...8).map { pending($0, partner: 1) } + (101...108).map { pending($0, partner: 2) }
            let partners: [Int64: ShareStanding] = [1: ShareStanding(entitled: gpu(0.75)), 2: ShareStanding(entitled: gpu(0.25))]
            var queue = FairShareQueue(
                jobs: jobs, partners: partners, projects: Self.projects(jobs), capacity: ShareVector(gpu: 8, cpu: 0, memory: 0))
            let first = drain(&queue, jobs, limit: 8).considered
            #expect(first == [1, 101, 2, 3, 4, 102, 5, 6])
        }

        @Test("a job that was not placed does not move its partner back")
        func unplacedDoesNotCount() {
            let jobs = (1...3).map { pending($0, partner: 1) } + (4...6).map { pending($0, partner: 2) }
            let partners: [Int64: ShareStanding] = [1: ShareStanding(entitled: Self.half), 2: ShareStanding(entitled: Self.half)]
            var queue = FairShareQueue(jobs: jobs, partners: partners, projects: Self.projects(jobs), capacity: Self.capacity)
            #expect(drain(&queue, jobs, place: { $0.partnerID == 1 ? nil : gpu(1) }).considered == [1, 2, 3, 4, 5, 6])
            #expect(queue.partners[1]!.allocated == .zero)
        }

        @Test("within a partner, projects share by their own standings")
        func projectsShare() {
            // Partner 1's project 10 used most of the partner's share lately; project 11 goes first despite higher ids.
            let jobs = [
                pending(1, partner: 1, project: 10), pending(2, partner: 1, project: 10), pending(8, partner: 1, project: 11),
                pending(9, partner: 1, project: 11),
            ]
            let projects: [Int64: ShareStanding] = [
                10: ShareStanding(entitled: Self.half, usedShare: gpu(0.8)), 11: ShareStanding(entitled: Self.half, usedShare: gpu(0.2)),
            ]
            var queue = FairShareQueue(jobs: jobs, partners: [1: ShareStanding(entitled: Self.half)], projects: projects, capacity: Self.capacity)
            #expect(drain(&queue, jobs, place: { _ in nil }).considered == [8, 9, 1, 2])
            // Equal projects interleave as they place.
            let equal: [Int64: ShareStanding] = [10: ShareStanding(entitled: Self.half), 11: ShareStanding(entitled: Self.half)]
            var interleaved = FairShareQueue(jobs: jobs, partners: [1: ShareStanding(entitled: Self.half)], projects: equal, capacity: Self.capacity)
            #expect(drain(&interleaved, jobs).considered == [1, 8, 2, 9])
        }

        @Test("partners are ordered before projects: a starved project of a rich partner waits")
        func partnerLevelFirst() {
            let jobs = [pending(1, partner: 1, project: 10), pending(2, partner: 2, project: 20)]
            let partners: [Int64: ShareStanding] = [
                1: ShareStanding(entitled: Self.half, usedShare: gpu(0.9)), 2: ShareStanding(entitled: Self.half, usedShare: gpu(0.1)),
            ]
            let projects: [Int64: ShareStanding] = [
                10: ShareStanding(entitled: Self.half), 20: ShareStanding(entitled: Self.half, usedShare: gpu(1)),
            ]
            var queue = FairShareQueue(jobs: jobs, partners: partners, projects: projects, capacity: Self.capacity)
            #expect(drain(&queue, jobs).considered == [2, 1])
        }

        @Test("within a project, jobs keep the given order (priority, then submission)")
        func withinProject() {
            // The caller orders each project's jobs; the queue keeps that order.
            let jobs = [
                pending(7, partner: 1, priority: 90), pending(3, partner: 1, priority: 50), pending(5, partner: 1, priority: 50),
                pending(1, partner: 1, priority: 10),
            ]
            var queue = FairShareQueue(
                jobs: jobs, partners: [1: ShareStanding(entitled: Self.half)], projects: Self.projects(jobs), capacity: Self.capacity)
            #expect(drain(&queue, jobs).considered == [7, 3, 5, 1])
        }

        @Test("between equal standings, the head job's priority, then its id, decides")
        func ties() {
            // Partners 1 and 2 stand equal; partner 2's head job is more urgent.
            let jobs = [pending(1, partner: 1, priority: 50), pending(2, partner: 2, priority: 80)]
            let partners: [Int64: ShareStanding] = [1: ShareStanding(entitled: Self.half), 2: ShareStanding(entitled: Self.half)]
            var queue = FairShareQueue(jobs: jobs, partners: partners, projects: Self.projects(jobs), capacity: Self.capacity)
            #expect(drain(&queue, jobs, place: { _ in nil }).considered == [2, 1])
            // Same for two projects of one partner.
            let sameProject = [pending(1, partner: 1, project: 10, priority: 50), pending(2, partner: 1, project: 11, priority: 80)]
            let projects: [Int64: ShareStanding] = [10: ShareStanding(entitled: Self.half), 11: ShareStanding(entitled: Self.half)]
            var byProject = FairShareQueue(
                jobs: sameProject, partners: [1: ShareStanding(entitled: Self.half)], projects: projects, capacity: Self.capacity)
            #expect(drain(&byProject, sameProject, place: { _ in nil }).considered == [2, 1])
        }

        @Test("a job is weighed by its partner's dominant share: CPU-heavy against GPU-heavy")
        func dominantResourceFairness() {
            // Partner 1 holds 40% of the CPUs and no GPU (ratio 0.4); partner 2 holds 30% of the GPUs and no CPU (0.3).
            let jobs = [
                pending(1, partner: 1, cpus: 30, gpus: 0), pending(2, partner: 1, cpus: 30, gpus: 0), pending(3, partner: 2, cpus: 1, gpus: 2),
                pending(4, partner: 2, cpus: 1, gpus: 2),
            ]
            let partners: [Int64: ShareStanding] = [
                1: ShareStanding(entitled: Self.half, allocated: ShareVector(gpu: 0, cpu: 40, memory: 0)),
                2: ShareStanding(entitled: Self.half, allocated: ShareVector(gpu: 3, cpu: 0, memory: 0)),
            ]
            var queue = FairShareQueue(jobs: jobs, partners: partners, projects: Self.projects(jobs), capacity: Self.capacity)
            let order = drain(&queue, jobs) { job in
                ShareVector(gpu: Double(job.resources.gpus), cpu: Double(job.resources.cpuMillis) / 1000, memory: 0)
            }
            // 2 first (0.3 < 0.4); then partner 2 holds 5 GPUs (0.5 > 0.4): 1; partner 1 holds 70 cores (0.7): 4; then 2.
            #expect(order.considered == [3, 1, 4, 2])
        }

        @Test("a partner without entitlement that already holds something goes after every entitled partner")
        func unentitledBorrowerLast() {
            let jobs = [pending(1, partner: 3), pending(2, partner: 1), pending(3, partner: 2)]
            let partners: [Int64: ShareStanding] = [
                1: ShareStanding(entitled: Self.half, usedShare: gpu(0.9), allocated: gpu(9)),
                2: ShareStanding(entitled: Self.half, usedShare: gpu(0.1), allocated: gpu(1)),
                3: ShareStanding(entitled: .zero, usedShare: gpu(0.001)),
            ]
            var queue = FairShareQueue(jobs: jobs, partners: partners, projects: Self.projects(jobs), capacity: Self.capacity)
            #expect(drain(&queue, jobs, place: { _ in nil }).considered == [3, 2, 1])
        }

        @Test(
            "a partner without entitlement that holds nothing yet still goes after entitled partners"
        )
        func unentitledNewcomerLast() {
            // Partner 3 has no contribution and no grant (absent from the standings); partner 1 is entitled to all of it
            // and holds 20%, well below its entitlement.
            let jobs = [pending(1, partner: 3), pending(2, partner: 1)]
            let partners: [Int64: ShareStanding] = [
                1: ShareStanding(entitled: ShareVector(gpu: 1, cpu: 1, memory: 1), usedShare: gpu(0.2), allocated: gpu(2))
            ]
            var queue = FairShareQueue(jobs: jobs, partners: partners, projects: Self.projects(jobs), capacity: Self.capacity)
            #expect(drain(&queue, jobs, place: { _ in nil }).considered == [2, 1])
        }

        @Test(
            "a partner with only a GPU grant is weighed by its GPU share, not by the CPU its GPU jobs need"
        )
        func grantOnlyPartner() {
            // 14 GPUs, 112 cores. Partner 4 has a 10% GPU grant and no hardware, so no CPU entitlement; it runs one 1-GPU,
            // 4-core job (7% of the GPUs, under its grant). Partner 1 holds 8 GPUs and 32 cores, above its entitlement.
            let capacity = ShareVector(gpu: 14, cpu: 112, memory: 896)
            let entitled = Entitlements.compute(
                contributions: [1: ShareVector(gpu: 8, cpu: 64, memory: 512), 2: ShareVector(gpu: 6, cpu: 48, memory: 384)],
                grants: [Grant(partnerID: 4, kind: .gpu, fraction: 0.1)])
            let partners: [Int64: ShareStanding] = [
                1: ShareStanding(entitled: entitled[1]!, usedShare: gpu(0.6), allocated: ShareVector(gpu: 8, cpu: 32, memory: 128)),
                4: ShareStanding(entitled: entitled[4]!, usedShare: gpu(0.07), allocated: ShareVector(gpu: 1, cpu: 4, memory: 16)),
            ]
            #expect(partners[4]!.heldRatio(capacity: capacity) < 1)
            let jobs = [pending(1, partner: 1, cpus: 4), pending(2, partner: 4, cpus: 4)]
            var queue = FairShareQueue(jobs: jobs, partners: partners, projects: Self.projects(jobs), capacity: capacity)
            #expect(drain(&queue, jobs, place: { _ in nil }).considered == [2, 1])
        }

        @Test("every job is considered exactly once, whatever the standings", arguments: [1, 2, 3, 4, 5] as [UInt64])
        func eachJobOnce(seed: UInt64) {
            var random = SplitMix64(seed: seed)
            let jobs = (0..<300).map { id in
                pending(
                    Int64(id), partner: Int64.random(in: 1...6, using: &random), project: Int64.random(in: 1...20, using: &random),
                    priority: Int.random(in: 0...3, using: &random) * 10)
            }
            // A project belongs to one partner: take the first partner that used it.
            var owner: [Int64: Int64] = [:]
            let consistent = jobs.map { job -> PendingJob in
                var job = job
                job.partnerID = owner[job.projectID, default: job.partnerID]
                owner[job.projectID] = job.partnerID
                return job
            }
            let partners = Dictionary(
                uniqueKeysWithValues: (1...5).map {
                    (
                        $0 as Int64,
                        ShareStanding(
                            entitled: gpu(Double.random(in: 0...0.3, using: &random)), usedShare: gpu(Double.random(in: 0...0.3, using: &random)))
                    )
                })
            var queue = FairShareQueue(jobs: consistent, partners: partners, projects: [:], capacity: Self.capacity)
            let order = drain(&queue, consistent) { _ in Bool.random(using: &random) ? gpu(1) : nil }.considered
            #expect(order.count == consistent.count)
            #expect(Set(order) == Set(consistent.map(\.id)))
            // Within each project the given order is kept.
            for project in Set(consistent.map(\.projectID)) {
                let given = consistent.filter { $0.projectID == project }.map(\.id)
                let position = Dictionary(uniqueKeysWithValues: order.enumerated().map { ($1, $0) })
                #expect(given.map { position[$0]! } == given.map { position[$0]! }.sorted())
            }
            #expect(queue.next() == nil)
        }

        @Test("an empty queue gives nothing")
        func empty() {
            var queue = FairShareQueue(jobs: [], partners: [:], projects: [:], capacity: Self.capacity)
            #expect(queue.next() == nil)
        }
    }
}

// MARK: - Quotas

extension SharingArithmeticTests {
    @Suite("QuotaBook")
    struct QuotaBookTests {
        static func usage(gpus: Int = 0, cpus: Int = 0, memory: Int64 = 0) -> QuotaUsage {
            QuotaUsage(gpus: gpus, cpuMillis: cpus * 1000, memoryBytes: memory)
        }

        @Test("a partner quota limits the partner's attempts in every project and region")
        func partnerQuota() {
            var book = QuotaBook([Quota(scope: .partner, subjectID: 1, subject: "uni-a", gpus: 4)])
            book.count(partnerID: 1, projectID: 10, region: "eu", Self.usage(gpus: 2, cpus: 8))
            book.count(partnerID: 1, projectID: 11, region: "us", Self.usage(gpus: 1, cpus: 8))
            book.count(partnerID: 2, projectID: 20, region: "eu", Self.usage(gpus: 8))
            #expect(book.exceeded(partnerID: 1, projectID: 12, region: nil, Self.usage(gpus: 1)) == nil)
            let over = book.exceeded(partnerID: 1, projectID: 12, region: nil, Self.usage(gpus: 2))
            #expect(over?.quota.subject == "uni-a")
            #expect(over?.resource == "gpus")
            #expect(over?.holding == Self.usage(gpus: 3, cpus: 16))
            // Another partner is not limited by it.
            #expect(book.exceeded(partnerID: 2, projectID: 20, region: nil, Self.usage(gpus: 100)) == nil)
        }

        @Test("a project quota limits only that project")
        func projectQuota() {
            var book = QuotaBook([Quota(scope: .project, subjectID: 10, subject: "ml-lab", cpuMillis: 8000)])
            book.count(partnerID: 1, projectID: 10, region: "eu", Self.usage(cpus: 6))
            #expect(book.exceeded(partnerID: 1, projectID: 10, region: nil, Self.usage(cpus: 2)) == nil)
            let over = book.exceeded(partnerID: 1, projectID: 10, region: nil, Self.usage(cpus: 3))
            #expect(over?.quota.scope == .project)
            #expect(over?.resource == "cpus")
            #expect(book.exceeded(partnerID: 1, projectID: 11, region: nil, Self.usage(cpus: 3)) == nil)
        }

        @Test("the partner's quota is named before the project's; GPUs before CPUs before memory")
        func order() {
            var book = QuotaBook([
                Quota(scope: .project, subjectID: 10, subject: "ml-lab", gpus: 1),
                Quota(scope: .partner, subjectID: 1, subject: "uni-a", cpuMillis: 1000, memoryBytes: GiB),
            ])
            book.count(partnerID: 1, projectID: 10, region: "eu", Self.usage(gpus: 1, cpus: 1, memory: GiB))
            let both = book.exceeded(partnerID: 1, projectID: 10, region: nil, Self.usage(gpus: 1, cpus: 1, memory: 1))
            #expect(both?.quota.scope == .partner)
            #expect(both?.resource == "cpus")
            #expect(book.exceeded(partnerID: 1, projectID: 10, region: nil, Self.usage(memory: 1))?.resource == "memory")
            #expect(book.exceeded(partnerID: 1, projectID: 10, region: nil, Self.usage(gpus: 1))?.quota.scope == .project)
        }

        @Test("a GPU quota does not hold back a job that needs no GPU, even when it is already over")
        func gpuQuotaIgnoresCPUJobs() {
            var book = QuotaBook([Quota(scope: .partner, subjectID: 1, subject: "uni-a", gpus: 2)])
            book.count(partnerID: 1, projectID: 10, region: "eu", Self.usage(gpus: 3))
            #expect(book.exceeded(partnerID: 1, projectID: 10, region: nil, Self.usage(cpus: 4)) == nil)
            #expect(book.exceeded(partnerID: 1, projectID: 10, region: nil, Self.usage(gpus: 1))?.resource == "gpus")
        }

        @Test("a limit is inclusive: reaching it exactly is allowed, a zero limit allows nothing")
        func boundaries() {
            var book = QuotaBook([
                Quota(scope: .partner, subjectID: 1, subject: "uni-a", gpus: 4), Quota(scope: .project, subjectID: 10, subject: "p", memoryBytes: 0),
            ])
            book.count(partnerID: 1, projectID: 11, region: "eu", Self.usage(gpus: 3))
            #expect(book.exceeded(partnerID: 1, projectID: 11, region: nil, Self.usage(gpus: 1)) == nil)
            #expect(book.exceeded(partnerID: 1, projectID: 10, region: nil, Self.usage(memory: 1))?.resource == "memory")
        }

        @Test("a region's quota counts and limits only attempts in that region")
        func regional() {
            var book = QuotaBook([Quota(scope: .partner, subjectID: 1, subject: "uni-a", region: "eu", gpus: 2)])
            #expect(book.hasRegional)
            book.count(partnerID: 1, projectID: 10, region: "eu", Self.usage(gpus: 1))
            book.count(partnerID: 1, projectID: 10, region: "us", Self.usage(gpus: 5))
            #expect(book.exceeded(partnerID: 1, projectID: 10, region: "eu", Self.usage(gpus: 1)) == nil)
            let over = book.exceeded(partnerID: 1, projectID: 10, region: "eu", Self.usage(gpus: 2))
            #expect(over?.quota.region == "eu")
            #expect(over?.holding == Self.usage(gpus: 1))
            #expect(book.exceeded(partnerID: 1, projectID: 10, region: "us", Self.usage(gpus: 8)) == nil)
            // Without a region, only the quotas that apply everywhere are checked.
            #expect(book.exceeded(partnerID: 1, projectID: 10, region: nil, Self.usage(gpus: 8)) == nil)
        }

        @Test("a project's regional quota")
        func regionalProject() {
            var book = QuotaBook([Quota(scope: .project, subjectID: 10, subject: "ml-lab", region: "eu-west", memoryBytes: 64 * GiB)])
            book.count(partnerID: 1, projectID: 10, region: "eu-west", Self.usage(memory: 60 * GiB))
            #expect(book.exceeded(partnerID: 1, projectID: 10, region: "eu-west", Self.usage(memory: 8 * GiB))?.resource == "memory")
            #expect(book.exceeded(partnerID: 1, projectID: 11, region: "eu-west", Self.usage(memory: 8 * GiB)) == nil)
        }

        /// Pins the current contract: with a region, `exceeded` checks only that region's quotas, so callers check the
        /// everywhere quotas once with `region: nil` and then host by host (see the report on the doc comment).
        @Test("the two-step check: everywhere quotas with no region, regional ones host by host")
        func twoStep() {
            var book = QuotaBook([
                Quota(scope: .partner, subjectID: 1, subject: "uni-a", gpus: 4),
                Quota(scope: .partner, subjectID: 1, subject: "uni-a", region: "eu", gpus: 1),
            ])
            book.count(partnerID: 1, projectID: 10, region: "us", Self.usage(gpus: 4))
            #expect(book.exceeded(partnerID: 1, projectID: 10, region: nil, Self.usage(gpus: 1))?.quota.region == nil)
            #expect(book.exceeded(partnerID: 1, projectID: 10, region: "eu", Self.usage(gpus: 1)) == nil)
            #expect(book.exceeded(partnerID: 1, projectID: 10, region: "eu", Self.usage(gpus: 2))?.quota.region == "eu")
        }

        @Test("which partners and projects have regional quotas")
        func hasRegionalQuota() {
            let book = QuotaBook([
                Quota(scope: .partner, subjectID: 1, subject: "uni-a", gpus: 4),
                Quota(scope: .project, subjectID: 20, subject: "p", region: "eu", gpus: 1),
            ])
            #expect(!book.isEmpty)
            #expect(book.hasRegionalQuota(partnerID: 2, projectID: 20))
            #expect(!book.hasRegionalQuota(partnerID: 1, projectID: 10))
            // A partner id equal to the regional project's id does not count.
            #expect(!book.hasRegionalQuota(partnerID: 20, projectID: 10))
            #expect(QuotaBook([]).isEmpty)
            #expect(!QuotaBook([Quota(scope: .partner, subjectID: 1, subject: "uni-a", gpus: 4)]).hasRegional)
        }

        @Test("no quotas: nothing is ever exceeded")
        func empty() {
            var book = QuotaBook([])
            book.count(partnerID: 1, projectID: 10, region: "eu", Self.usage(gpus: 1000))
            #expect(book.exceeded(partnerID: 1, projectID: 10, region: "eu", Self.usage(gpus: 1000)) == nil)
        }

        @Test("labels and the stable reason text")
        func describe() {
            let project = Quota(scope: .project, subjectID: 10, subject: "ml-lab", gpus: 8)
            #expect(project.label == "project ml-lab")
            #expect(QuotaBook.describe(project, holding: Self.usage(gpus: 8), resource: "gpus") == "project ml-lab: gpus 8/8 held")
            let partner = Quota(scope: .partner, subjectID: 1, subject: "uni-a", region: "eu-west", cpuMillis: 4000, memoryBytes: 64 * GiB)
            #expect(partner.label == "partner uni-a in eu-west")
            #expect(
                QuotaBook.describe(partner, holding: QuotaUsage(gpus: 0, cpuMillis: 1500, memoryBytes: 0), resource: "cpus")
                    == "partner uni-a in eu-west: cpus 1.5/4 held")
            #expect(
                QuotaBook.describe(partner, holding: Self.usage(memory: 48 * GiB), resource: "memory")
                    == "partner uni-a in eu-west: memory 48Gi/64Gi held")
        }
    }
}

// MARK: - Reclaim

extension SharingArithmeticTests {
    @Suite("Reclaim.plan")
    struct ReclaimTests {
        static let capacity = ShareVector(gpu: 10, cpu: 100, memory: 1000)

        /// A host whose GPUs are all held (by the guests given to the plan), with `freeGPUs` free.
        static func host(_ id: Int64, gpus total: Int = 4, free: [Int] = [], cpus: Int = 64) -> HostAvailability {
            HostAvailability(id: id, freeCPUMillis: cpus * 1000, freeMemoryBytes: 256 * GiB, freeGPUs: gpus(free), totalGPUs: total, partnerID: 1)
        }

        static func guest(
            _ attempt: Int64, host: Int64 = 10, partner: Int64 = 7, priority: Int = 50, started: Double = 0, gpus indices: [Int], cpus: Int = 1,
            reclaimable: Bool = true
        ) -> RunningGuest {
            RunningGuest(
                attemptID: attempt, jobID: attempt + 1000, hostID: host, partnerID: partner, priority: priority, startedAt: started,
                cpuMillis: cpus * 1000, memoryBytes: GiB, gpus: gpus(indices), holding: gpu(Double(indices.count)), reclaimable: reclaimable)
        }

        /// Borrowers well above their (small) entitlements.
        static let borrowing: [Int64: ShareStanding] = [
            7: ShareStanding(entitled: gpu(0.1), allocated: gpu(8)), 8: ShareStanding(entitled: gpu(0.1), allocated: gpu(8)),
        ]

        static func request(gpus: Int, cpus: Int = 1) -> ResourceRequest { ResourceRequest(cpuMillis: cpus * 1000, memoryBytes: GiB, gpus: gpus) }

        static func plan(
            _ request: ResourceRequest, _ hosts: [HostAvailability], _ guests: [RunningGuest], standings: [Int64: ShareStanding] = borrowing
        )
            -> Reclaim.Plan?
        {
            Reclaim.plan(for: request, on: hosts, guests: guests, standings: standings, capacity: capacity)
        }

        @Test("victims are taken lowest priority first, then newest")
        func order() {
            let guests = [
                Self.guest(1, priority: 10, started: 100, gpus: [0]), Self.guest(2, priority: 5, started: 100, gpus: [1]),
                Self.guest(3, priority: 5, started: 200, gpus: [2]), Self.guest(4, priority: 1, started: 50, gpus: [3]),
            ]
            #expect(Self.plan(Self.request(gpus: 1), [Self.host(10)], guests)?.victims.map(\.attemptID) == [4])
            #expect(Self.plan(Self.request(gpus: 2), [Self.host(10)], guests)?.victims.map(\.attemptID) == [4, 3])
            #expect(Self.plan(Self.request(gpus: 3), [Self.host(10)], guests)?.victims.map(\.attemptID) == [4, 3, 2])
            #expect(Self.plan(Self.request(gpus: 4), [Self.host(10)], guests)?.victims.map(\.attemptID) == [4, 3, 2, 1])
            #expect(Self.plan(Self.request(gpus: 1), [Self.host(10)], guests)?.hostID == 10)
        }

        @Test("what is already free counts: only the missing GPUs are reclaimed")
        func usesFree() {
            let guests = [Self.guest(1, priority: 1, gpus: [0]), Self.guest(2, priority: 2, gpus: [1])]
            #expect(Self.plan(Self.request(gpus: 2), [Self.host(10, gpus: 3, free: [2])], guests)?.victims.map(\.attemptID) == [1])
        }

        @Test("a victim the job does not need after all is spared: the fewest victims")
        func pruning() {
            // 1 GPU at priority 1 is taken first, then 2 GPUs at priority 2 make the job fit; those 2 alone suffice.
            let guests = [Self.guest(1, priority: 1, gpus: [0]), Self.guest(2, priority: 2, gpus: [1, 2]), Self.guest(3, priority: 3, gpus: [3])]
            #expect(Self.plan(Self.request(gpus: 2), [Self.host(10)], guests)?.victims.map(\.attemptID) == [2])
        }

        @Test("CPU held by guests is reclaimed too")
        func cpu() {
            let host = Self.host(10, gpus: 2, free: [0, 1], cpus: 4)
            let guests = [Self.guest(1, priority: 1, gpus: [], cpus: 1), Self.guest(2, priority: 2, gpus: [], cpus: 3)]
            // 4 cores are free beside the guests' 1 and 3.
            #expect(Self.plan(Self.request(gpus: 1, cpus: 5), [host], guests)?.victims.map(\.attemptID) == [1])
            #expect(Self.plan(Self.request(gpus: 1, cpus: 7), [host], guests)?.victims.map(\.attemptID) == [2])
            #expect(Self.plan(Self.request(gpus: 1, cpus: 8), [host], guests)?.victims.map(\.attemptID) == [1, 2])
            #expect(Self.plan(Self.request(gpus: 1, cpus: 9), [host], guests) == nil)
        }

        @Test("a guest whose partner would drop below its entitlement is spared")
        func sparesEntitled() {
            // Partner 8 holds 3 GPUs of 10 and is entitled to 30%: preempting any would put it under.
            let standings = Self.borrowing.merging([8: ShareStanding(entitled: gpu(0.3), allocated: gpu(3))]) { _, new in new }
            let guests = [
                Self.guest(1, partner: 8, priority: 1, gpus: [0]), Self.guest(2, partner: 7, priority: 9, gpus: [1]),
                Self.guest(3, partner: 8, priority: 1, gpus: [2, 3]),
            ]
            #expect(Self.plan(Self.request(gpus: 1), [Self.host(10)], guests, standings: standings)?.victims.map(\.attemptID) == [2])
            #expect(Self.plan(Self.request(gpus: 2), [Self.host(10)], guests, standings: standings) == nil)
            // Holding 4, entitled to 30%: one 1-GPU guest may go (down to exactly 30%), not a second.
            let above = Self.borrowing.merging([8: ShareStanding(entitled: gpu(0.3), allocated: gpu(4))]) { _, new in new }
            let small = [
                Self.guest(1, partner: 8, priority: 1, gpus: [0]), Self.guest(4, partner: 8, priority: 2, gpus: [3]),
                Self.guest(2, partner: 7, priority: 9, gpus: [1]),
            ]
            #expect(Self.plan(Self.request(gpus: 2), [Self.host(10)], small, standings: above)?.victims.map(\.attemptID) == [1, 2])
        }

        @Test("a guest that is not reclaimable is never chosen")
        func notReclaimable() {
            let guests = [
                Self.guest(1, priority: 1, gpus: [0], reclaimable: false), Self.guest(2, priority: 5, gpus: [1]),
                Self.guest(3, priority: 9, gpus: [2, 3], reclaimable: false),
            ]
            #expect(Self.plan(Self.request(gpus: 1), [Self.host(10)], guests)?.victims.map(\.attemptID) == [2])
            #expect(Self.plan(Self.request(gpus: 2), [Self.host(10)], guests) == nil)
        }

        @Test("nil when the job cannot fit even after preempting every guest allowed")
        func impossible() {
            let guests = [Self.guest(1, gpus: [0, 1]), Self.guest(2, gpus: [2, 3])]
            #expect(Self.plan(Self.request(gpus: 5), [Self.host(10)], guests) == nil)
            #expect(Self.plan(Self.request(gpus: 1), [Self.host(10)], []) == nil)
            #expect(Self.plan(Self.request(gpus: 1), [], guests) == nil)
            // Guests on a host the job may not use do not help.
            #expect(Self.plan(Self.request(gpus: 1), [Self.host(20)], guests) == nil)
        }

        @Test("across hosts, the plan with fewer victims wins, then the least important victims, then the first host")
        func acrossHosts() {
            let guests = [
                Self.guest(1, host: 10, priority: 1, gpus: [0]), Self.guest(2, host: 10, priority: 1, gpus: [1]),
                Self.guest(3, host: 20, priority: 9, gpus: [0, 1]), Self.guest(4, host: 30, priority: 5, gpus: [0, 1]),
                Self.guest(5, host: 40, priority: 5, gpus: [0, 1]),
            ]
            let hosts = [Self.host(10, gpus: 2), Self.host(20, gpus: 2), Self.host(30, gpus: 2), Self.host(40, gpus: 2)]
            let plan = Self.plan(Self.request(gpus: 2), hosts, guests)
            #expect(plan?.hostID == 30)
            #expect(plan?.victims.map(\.attemptID) == [4])
            // Hosts 30 and 40 tie: the first given wins.
            #expect(Self.plan(Self.request(gpus: 2), hosts.reversed(), guests)?.hostID == 40)
            // Without 30 and 40, one priority-9 victim beats two priority-1 victims.
            #expect(Self.plan(Self.request(gpus: 2), Array(hosts.prefix(2)), guests)?.hostID == 20)
        }

        @Test("a borrower with no entitlement may lose its last guest")
        func zeroEntitlementLastGuest() {
            let standings: [Int64: ShareStanding] = [9: ShareStanding(entitled: .zero, allocated: gpu(1))]
            let guests = [Self.guest(1, partner: 9, gpus: [0])]
            #expect(Self.plan(Self.request(gpus: 1), [Self.host(10, gpus: 1)], guests, standings: standings)?.victims.map(\.attemptID) == [1])
        }

        @Test("a borrower with no entitlement may lose all but its last guest")
        func zeroEntitlementOtherGuests() {
            let standings: [Int64: ShareStanding] = [9: ShareStanding(entitled: .zero, allocated: gpu(2))]
            let guests = [Self.guest(1, partner: 9, gpus: [0]), Self.guest(2, partner: 9, gpus: [1])]
            #expect(Self.plan(Self.request(gpus: 1), [Self.host(10, gpus: 2)], guests, standings: standings)?.victims.count == 1)
        }
    }
}
