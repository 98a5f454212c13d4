import ComityCore
import Foundation
import Testing

/// A discrete-event simulation of fair sharing over a GPU pool, using only Core: ``Entitlements``,
/// ``FairShareQueue``, ``Placer/Session`` and ``Decay``. No preemption: only the order in which freed GPUs are
/// handed out steers the shares.
///
/// Every minute: usage of the past minute is decayed in, ended jobs free their GPUs, each partner's backlog is
/// topped up, standings are rebuilt and one scheduling pass places waiting jobs until nothing fits.
struct FairShareSimulation {
    struct Partner {
        var id: Int64
        /// Hosts of one GPU each.
        var hosts: Int
    }

    struct Configuration {
        var partners: [Partner]
        var grants: [Grant]
        var hours = 8
        var halfLifeSeconds = 2 * 3600.0
        /// Waiting jobs each partner keeps at every tick (a deep backlog: every partner is always busy).
        var backlog = 30
        var runtimeMinutes = 5...60
        /// Partners that submit nothing before this minute.
        var idleUntil: [Int64: Int] = [:]
        /// Whether holdings and contributions count CPU and memory too (as the store does), or GPUs alone.
        var countsCPUAndMemory = false
        var seed: UInt64 = 42

        static let coresPerHost = 8
        static let memoryPerHost: Int64 = 64 << 30
        static let coresPerJob = 4
        static let memoryPerJob: Int64 = 16 << 30
    }

    struct Result {
        var entitled: [Int64: Double]
        /// Fraction of all GPU-minutes used from the middle of the run to its end, per partner.
        var measured: [Int64: Double]
        /// Fraction of the pool's GPU-minutes in use over the same window.
        var utilization: Double
        /// Ticks that ended with a free GPU while some job waited.
        var idleWhileWaiting: [Int]
        /// GPUs held per partner at each minute.
        var held: [[Int64: Int]]
        var placed: Int
    }

    private struct Job {
        var id: Int64
        var partner: Int64
        var priority: Int
        var runtime: Int
    }

    private struct Running {
        var partner: Int64
        var hostIndex: Int
        var gpuIndex: Int
        var holding: ShareVector
        var ends: Int
    }

    static func run(_ configuration: Configuration) -> Result {
        var random = SplitMix64(seed: configuration.seed)
        var hosts: [HostAvailability] = []
        var contributions: [Int64: ShareVector] = [:]
        for partner in configuration.partners {
            for _ in 0..<partner.hosts {
                hosts.append(
                    HostAvailability(
                        id: Int64(hosts.count + 1), freeCPUMillis: Configuration.coresPerHost * 1000, freeMemoryBytes: Configuration.memoryPerHost,
                        freeGPUs: [GPU(index: 0, uuid: "GPU-\(hosts.count + 1)", model: "NVIDIA H100 80GB HBM3", memoryBytes: 80 << 30)],
                        totalGPUs: 1, partnerID: partner.id))
            }
            let capacity = ShareVector(
                cpuMillis: partner.hosts * Configuration.coresPerHost * 1000, memoryBytes: Int64(partner.hosts) * Configuration.memoryPerHost,
                weightedGPUs: Double(partner.hosts))
            contributions[partner.id] = configuration.countsCPUAndMemory ? capacity : ShareVector(gpu: capacity.gpu, cpu: 0, memory: 0)
        }
        let capacity = contributions.values.reduce(ShareVector.zero, +)
        let entitlements = Entitlements.compute(contributions: contributions, grants: configuration.grants)
        let partnerIDs = configuration.partners.map(\.id)
        let request = ResourceRequest(cpuMillis: Configuration.coresPerJob * 1000, memoryBytes: Configuration.memoryPerJob, gpus: 1)
        let holding =
            configuration.countsCPUAndMemory
            ? ShareVector(cpuMillis: request.cpuMillis, memoryBytes: request.memoryBytes, weightedGPUs: 1) : ShareVector(gpu: 1, cpu: 0, memory: 0)

        var nextJobID: Int64 = 1
        var backlog: [Int64: [Job]] = [:]
        var running: [Running] = []
        var usage: [Int64: ShareVector] = [:]
        let minutes = configuration.hours * 60
        let measureFrom = minutes / 2
        var gpuMinutes: [Int64: Int] = [:]
        var idleWhileWaiting: [Int] = []
        var heldLog: [[Int64: Int]] = []
        var placed = 0

        for minute in 0..<minutes {
            // What was held over the past minute counts as usage, decayed like the store's accounting.
            var allocated: [Int64: ShareVector] = [:]
            for job in running { allocated[job.partner, default: .zero] += job.holding }
            for partner in partnerIDs {
                usage[partner] = Decay.advance(
                    usage[partner] ?? .zero, elapsedSeconds: 60, halfLifeSeconds: configuration.halfLifeSeconds,
                    adding: (allocated[partner] ?? .zero) * 60)
            }

            // Jobs that ended give their GPU back.
            running.removeAll { job in
                guard job.ends <= minute else { return false }
                hosts[job.hostIndex].freeCPUMillis += request.cpuMillis
                hosts[job.hostIndex].freeMemoryBytes += request.memoryBytes
                hosts[job.hostIndex].freeGPUs.append(
                    GPU(index: job.gpuIndex, uuid: "GPU-\(hosts[job.hostIndex].id)", model: "NVIDIA H100 80GB HBM3", memoryBytes: 80 << 30))
                allocated[job.partner]! -= job.holding
                return true
            }

            // Every active partner keeps a deep backlog.
            for partner in partnerIDs where minute >= configuration.idleUntil[partner, default: 0] {
                while backlog[partner, default: []].count < configuration.backlog {
                    backlog[partner, default: []].append(
                        Job(
                            id: nextJobID, partner: partner, priority: [0, 50, 100].randomElement(using: &random)!,
                            runtime: Int.random(in: configuration.runtimeMinutes, using: &random)))
                    nextJobID += 1
                }
            }

            // Standings: entitlement, decayed usage as a fraction of everyone's, what is held now.
            let totalUsage = usage.values.reduce(ShareVector.zero, +)
            var partners: [Int64: ShareStanding] = [:]
            var projects: [Int64: ShareStanding] = [:]
            for partner in partnerIDs {
                let standing = ShareStanding(
                    entitled: entitlements[partner] ?? .zero, usedShare: (usage[partner] ?? .zero).fraction(of: totalUsage),
                    allocated: allocated[partner] ?? .zero)
                partners[partner] = standing
                // One project per partner, entitled to all of the partner's share.
                projects[partner] = ShareStanding(
                    entitled: ShareVector(gpu: 1, cpu: 1, memory: 1), usedShare: ShareVector(gpu: 1, cpu: 1, memory: 1), allocated: standing.allocated
                )
            }

            // One pass: the fair-share order, each job to the best host, until nothing fits.
            var waiting: [PendingJob] = []
            var byID: [Int64: Job] = [:]
            for partner in partnerIDs {
                let ordered = backlog[partner, default: []].sorted { ($0.priority, -$0.id) > ($1.priority, -$1.id) }
                backlog[partner] = ordered
                for job in ordered {
                    waiting.append(PendingJob(id: job.id, resources: request, priority: job.priority, partnerID: partner, projectID: partner))
                    byID[job.id] = job
                }
            }
            var queue = FairShareQueue(jobs: waiting, partners: partners, projects: projects, capacity: capacity)
            var session = Placer.Session(hosts)
            var started: Set<Int64> = []
            var freeGPUs = hosts.reduce(0) { $0 + $1.freeGPUs.count }
            // Once every GPU is taken nothing else fits (every job needs one): the rest of the queue is skipped.
            while freeGPUs > 0, let index = queue.next() {
                let pending = waiting[index]
                guard let placement = session.place(pending, admits: { _ in true }) else {
                    queue.record(index, holding: nil)
                    continue
                }
                queue.record(index, holding: holding)
                let job = byID[pending.id]!
                let hostIndex = hosts.firstIndex { $0.id == placement.hostID }!
                running.append(
                    Running(
                        partner: job.partner, hostIndex: hostIndex, gpuIndex: placement.gpuIndices[0], holding: holding, ends: minute + job.runtime))
                started.insert(job.id)
                freeGPUs -= 1
                placed += 1
            }
            hosts = session.hosts
            for partner in partnerIDs { backlog[partner]?.removeAll { started.contains($0.id) } }

            // Work-conserving: no GPU stays free while a job waits (every job fits every free GPU here).
            let stillWaiting = backlog.values.contains { !$0.isEmpty }
            if stillWaiting, hosts.contains(where: { !$0.freeGPUs.isEmpty }) { idleWhileWaiting.append(minute) }

            var held: [Int64: Int] = [:]
            for job in running { held[job.partner, default: 0] += 1 }
            heldLog.append(held)
            if minute >= measureFrom {
                for (partner, count) in held { gpuMinutes[partner, default: 0] += count }
            }
        }

        let used = gpuMinutes.values.reduce(0, +)
        let poolMinutes = hosts.count * (minutes - measureFrom)
        return Result(
            entitled: entitlements.mapValues(\.gpu),
            measured: Dictionary(uniqueKeysWithValues: partnerIDs.map { ($0, Double(gpuMinutes[$0, default: 0]) / Double(max(used, 1))) }),
            utilization: Double(used) / Double(poolMinutes), idleWhileWaiting: idleWhileWaiting, held: heldLog, placed: placed)
    }
}

extension FairShareSimulation.Result: CustomStringConvertible {
    var description: String {
        entitled.keys.sorted().map { partner in
            let measured = measured[partner] ?? 0
            let entitled = entitled[partner] ?? 0
            return "partner \(partner): measured \(percent(measured)) entitled \(percent(entitled)) (\(percent(measured - entitled, signed: true)))"
        }.joined(separator: "; ") + "; utilization \(percent(utilization)), \(placed) jobs placed"
    }

    private func percent(_ value: Double, signed: Bool = false) -> String {
        let rounded = (value * 1000).rounded() / 10
        return (signed && rounded >= 0 ? "+" : "") + "\(rounded)%"
    }
}

@Suite("Fair-share simulation")
struct FairShareSimulationTests {
    /// Three partners with 8, 4 and 2 one-GPU hosts, and a fourth with no hardware and 10% of the GPU pool granted:
    /// entitlements 51.4%, 25.7%, 12.9% and 10% of 14 GPUs.
    static let pool = FairShareSimulation.Configuration(
        partners: [.init(id: 1, hosts: 8), .init(id: 2, hosts: 4), .init(id: 3, hosts: 2), .init(id: 4, hosts: 0)],
        grants: [Grant(partnerID: 4, kind: .gpu, fraction: 0.1)])

    /// How far a partner's measured share of GPU-hours, over the second half of the run, may stray from its
    /// entitlement: 3 percentage points of the pool. Measured (seeds 42, 7, 2024): partner 1 −1.9 to −2.1, partner 2
    /// −0.2 to −1.1, partner 3 +1.4, partner 4 +0.6 to +1.6. Without preemption a partner whose job ends is compared
    /// with one GPU less, so a small partner keeps the next whole GPU above its entitlement (partner 3 holds 2 of its
    /// 1.8 throughout); the bias shrinks with the pool (within 0.7 points at 4 times this size).
    static let tolerance = 0.03

    @Test("with every partner busy, GPU-hours converge to entitlements", arguments: [42, 7, 2024] as [UInt64])
    func convergesToEntitlements(seed: UInt64) {
        var configuration = Self.pool
        configuration.seed = seed
        let result = FairShareSimulation.run(configuration)
        #expect(isClose(result.entitled[1]!, 0.9 * 8 / 14) && isClose(result.entitled[4]!, 0.1))
        #expect(result.utilization == 1, "\(result)")
        for partner in [1, 2, 3, 4] as [Int64] {
            #expect(abs(result.measured[partner]! - result.entitled[partner]!) <= Self.tolerance, "partner \(partner): \(result)")
        }
    }

    @Test("no GPU is idle while a job waits, at any tick")
    func workConserving() {
        for counts in [false, true] {
            var configuration = Self.pool
            configuration.countsCPUAndMemory = counts
            // Partner 1 starts late: meanwhile the others borrow its hosts.
            configuration.idleUntil = [1: 120]
            let result = FairShareSimulation.run(configuration)
            #expect(result.idleWhileWaiting.isEmpty, "idle GPUs at minutes \(result.idleWhileWaiting.prefix(10))")
            #expect(result.held[60].values.reduce(0, +) == 14, "the others borrow partner 1's idle hosts")
            #expect(result.held[60][1] == nil)
        }
    }

    @Test("the partner without hardware gets its grant")
    func grantHonoured() {
        let result = FairShareSimulation.run(Self.pool)
        #expect(abs(result.measured[4]! - 0.1) <= Self.tolerance, "\(result)")
        // And all along, not only on average: it holds at least one GPU at every minute of the second half.
        let late = result.held.suffix(result.held.count / 2)
        #expect(late.allSatisfy { ($0[4] ?? 0) >= 1 }, "\(result)")
    }

    @Test(
        "the partner without hardware gets its grant when CPU and memory are counted too"
        )
    func grantHonouredCountingCPU() {
        var configuration = Self.pool
        configuration.countsCPUAndMemory = true
        let result = FairShareSimulation.run(configuration)
        for partner in [1, 2, 3, 4] as [Int64] {
            #expect(abs(result.measured[partner]! - result.entitled[partner]!) <= Self.tolerance, "partner \(partner): \(result)")
        }
    }

    @Test("a partner back from idle regains its entitlement by ordering alone")
    func returnsFromIdle() {
        var configuration = Self.pool
        configuration.idleUntil = [1: 120]
        configuration.hours = 10
        let result = FairShareSimulation.run(configuration)
        // Measured over hours 5 to 10: its low decayed usage lets it catch up, then it settles.
        for partner in [1, 2, 3, 4] as [Int64] {
            #expect(abs(result.measured[partner]! - result.entitled[partner]!) <= Self.tolerance, "partner \(partner): \(result)")
        }
        // Once back, it reaches its 7.2 GPUs within about an hour of turnover (jobs last 5 to 60 minutes).
        let firstAtEntitlement = result.held.indices.first { $0 >= 120 && (result.held[$0][1] ?? 0) >= 7 }
        #expect(firstAtEntitlement != nil && firstAtEntitlement! <= 120 + 60, "reached at minute \(String(describing: firstAtEntitlement))")
    }
}

private func isClose(_ a: Double, _ b: Double) -> Bool { abs(a - b) < 1e-9 }
