import ComityCore
import Foundation
import PropertyBased
import Testing

/// Random federations (``PolicyWorld``) go through the real parser, the real engine (memoized per job class and host
/// key, as the scheduler does) and the real ``Placer``; every verdict and every placement is then checked against
/// ``ReferenceChecker``, which knows nothing of the engine.
@Suite("Sovereignty: real placement against a reference checker")
struct SovereigntyPropertyTests {
    /// What the cases exercised: both outcomes and every kind of reason, or the checks prove little.
    struct Tally {
        var cases = 0
        var pairs = 0
        var eligiblePairs = 0
        var placed = 0
        var unplaced = 0
        var codes: Set<Reason.Code> = []
    }

    static let worlds = Generator { rng in PolicyWorld.random(using: &rng) }

    @Test("random worlds (new ones each run; a failure names the seed to replay with .fixedSeed)")
    func randomWorlds() async {
        var tally = Tally()
        await propertyCheck(count: 2000, input: Self.worlds) { world in
            Self.check(world, tally: &tally)
        }
        #expect(tally.cases > 0)
    }

    @Test("a fixed corpus of seeded worlds, the same on every run, reaches every rule kind and both outcomes")
    func seededWorlds() {
        var tally = Tally()
        for seed: UInt64 in 0..<600 {
            var rng = SplitMix64(seed: seed)
            Self.check(PolicyWorld.random(using: &rng), tally: &tally, label: "seed \(seed)")
        }
        let expected: Set<Reason.Code> = [
            .unknownDataset, .unknownProject, .useCondition, .residencyEmpty, .federationForbidJob, .residency, .labelRequired,
            .exportControl, .donorNoPolicy, .donorNoPermit, .donorForbid, .donorWindow, .donorWindowFit, .federationForbid,
            .policyFutureConflict, .evalError, .hostDown, .hostDraining,
        ]
        #expect(expected.subtracting(tally.codes).isEmpty, "never produced: \(expected.subtracting(tally.codes).map(\.rawValue).sorted())")
        #expect(tally.eligiblePairs * 10 > tally.pairs, "\(tally.eligiblePairs) of \(tally.pairs) pairs eligible")
        #expect(tally.eligiblePairs * 10 < tally.pairs * 9, "\(tally.eligiblePairs) of \(tally.pairs) pairs eligible")
        #expect(tally.placed > 300, "\(tally.placed) placed")
        #expect(tally.unplaced > 300, "\(tally.unplaced) not placed")
    }

    struct Pair: Hashable {
        var job: Int
        var host: Int
    }

    static func check(_ world: PolicyWorld, tally: inout Tally, label: String = "") {
        tally.cases += 1
        var problems: [String] = []
        defer {
            if !problems.isEmpty { Issue.record("\(label)\n\(problems.prefix(6).joined(separator: "\n"))\nin\n\(world)") }
        }
        let reference = ReferenceChecker(world: world)

        // The documents parse, and write-time checks refuse exactly those that are broken on purpose.
        var versions: [PolicyVersion] = []
        var counts: [PolicyKey: Int] = [:]
        for json in world.documents {
            switch PolicyDocument.parse(json) {
            case .failure(let failure):
                problems.append("does not parse: \(failure)")
                return
            case .success(let document):
                counts[document.key, default: 0] += 1
                versions.append(PolicyVersion(document: document, version: counts[document.key]!, effectiveFrom: document.effectiveFrom ?? .distantPast))
            }
        }
        let snapshot = PolicySnapshot(facts: world.facts, versions: versions)
        for version in versions {
            let broken: Bool
            switch version.document.body {
            case .jurisdictionSet: broken = reference.expand(version.document.name, path: []) == nil
            case .dataset(let rule):
                broken =
                    rule.derivedFrom.contains { $0.source == "ghost" }
                    || rule.exportClass.map { name in !world.federation.contains { $0.value.exportClasses[name] != nil } } ?? false
            default: broken = false
            }
            let errors = snapshot.referenceErrors(version.document)
            if errors.isEmpty == broken { problems.append("write-time check of \(version.label): \(errors)") }
        }

        // The engine, memoized per (job class, host key).
        let hostFacts = world.hosts.map(world.hostFacts)
        let jobFacts = world.jobs.map(world.jobFacts)
        var keyOf: [PolicyHostKey: Int] = [:]
        var representative: [Int: HostFacts] = [:]
        for host in hostFacts where keyOf[host.policyKey] == nil {
            representative[keyOf.count] = host
            keyOf[host.policyKey] = keyOf.count
        }
        var classOf: [JobFacts: Int] = [:]
        for job in jobFacts where classOf[job] == nil { classOf[job] = classOf.count }
        var verdicts: [Pair: Verdict] = [:]
        for (job, jobClass) in classOf {
            let prepared = snapshot.active(at: world.now).prepare(job)
            for (key, host) in representative {
                let full = snapshot.evaluate(job, on: host, at: world.now)
                verdicts[Pair(job: jobClass, host: key)] = full
                // The scheduler's fast path (first failure decides, no text) must reach the same decision.
                let fast = snapshot.evaluate(prepared, on: host, at: world.now, decideOnly: true)
                if fast.eligible != full.eligible {
                    problems.append("decide-only verdict \(fast.eligible) differs from the full one \(full.eligible) (\(full.failures.map(\.label)))")
                }
            }
        }
        func verdict(_ job: Int, _ host: Int) -> Verdict {
            verdicts[Pair(job: classOf[jobFacts[job]]!, host: keyOf[hostFacts[host].policyKey]!)]!
        }

        // Every verdict agrees with the reference; jobs it says can never run are rejected at submission.
        let active = snapshot.active(at: world.now)
        var expected: [Pair: Bool] = [:]
        for (j, job) in world.jobs.enumerated() {
            if reference.rejected(job), !active.jobReasons(jobFacts[j]).contains(where: { $0.category == .job }) {
                problems.append("job \(job.id) can never run, but has no job-level reason: \(active.jobReasons(jobFacts[j]).map(\.label))")
            }
            for (h, host) in world.hosts.enumerated() {
                let engine = verdict(j, h)
                let eligible = reference.eligible(job, on: host)
                expected[Pair(job: j, host: h)] = eligible
                tally.pairs += 1
                if eligible { tally.eligiblePairs += 1 }
                tally.codes.formUnion(engine.failures.map(\.code))
                if engine.eligible != eligible {
                    problems.append(
                        "job \(job.id) on host \(host.id): engine says \(engine.eligible ? "eligible" : "\(engine.failures.map(\.label))"), reference \(eligible)"
                    )
                }
            }
        }

        // The real placement.
        let partnerIDs = Dictionary(uniqueKeysWithValues: world.partners.keys.sorted().enumerated().map { ($1, Int64($0)) })
        let pool = world.hosts.enumerated().map { h, host in
            HostAvailability(
                id: host.id, freeCPUMillis: host.cpus * 1000, freeMemoryBytes: Int64(host.memoryGi) << 30,
                freeGPUs: (0..<host.gpus).map { GPU(index: $0, uuid: "GPU-\(host.id)-\($0)", model: "NVIDIA H100", memoryBytes: 80 << 30) },
                totalGPUs: host.gpus, partnerID: partnerIDs[host.partner]!, policyKey: keyOf[hostFacts[h].policyKey]!)
        }
        func request(_ job: PolicyWorld.Job) -> ResourceRequest {
            ResourceRequest(cpuMillis: job.cpus * 1000, memoryBytes: Int64(job.memoryGi) << 30, gpus: job.gpus)
        }
        let pending = world.jobs.enumerated().map { j, job in
            PendingJob(
                id: job.id, resources: request(job), priority: 0, partnerID: partnerIDs[job.partner]!, policyClass: classOf[jobFacts[j]]!)
        }
        let placements = Placer.place(pending, on: pool) { policyClass, policyKey in
            verdicts[Pair(job: policyClass, host: policyKey)]!.eligible
        }

        // Every placement, in job order: eligible by the reference, no job-level reason, capacity never
        // oversubscribed, the job's own partner's hosts first, and no job skipped that an eligible host could take.
        if Set(placements.map(\.jobID)).count != placements.count { problems.append("a job placed twice: \(placements)") }
        let byJob = Dictionary(placements.map { ($0.jobID, $0) }, uniquingKeysWith: { first, _ in first })
        var free = world.hosts.map { (cpu: $0.cpus * 1000, memory: Int64($0.memoryGi) << 30, gpus: Set(0..<$0.gpus)) }
        for (j, job) in world.jobs.enumerated() {
            let need = request(job)
            let fitting = world.hosts.indices.filter { h in
                expected[Pair(job: j, host: h)]! && free[h].cpu >= need.cpuMillis && free[h].memory >= need.memoryBytes
                    && free[h].gpus.count >= need.gpus
            }
            guard let placement = byJob[job.id] else {
                tally.unplaced += 1
                if !fitting.isEmpty { problems.append("job \(job.id) not placed, though hosts \(fitting.map { world.hosts[$0].id }) may take it") }
                continue
            }
            tally.placed += 1
            guard let h = world.hosts.firstIndex(where: { $0.id == placement.hostID }) else {
                problems.append("job \(job.id) placed on unknown host \(placement.hostID)")
                continue
            }
            let host = world.hosts[h]
            if !expected[Pair(job: j, host: h)]! { problems.append("job \(job.id) placed on host \(host.id), which the reference forbids") }
            let reasons = active.jobReasons(jobFacts[j])
            if !reasons.isEmpty { problems.append("job \(job.id) placed despite job-level reasons \(reasons.map(\.label))") }
            if free[h].cpu < need.cpuMillis || free[h].memory < need.memoryBytes || placement.gpuIndices.count != need.gpus
                || !Set(placement.gpuIndices).isSubset(of: free[h].gpus)
            {
                problems.append("job \(job.id) oversubscribes host \(host.id): \(placement)")
            }
            if host.partner != job.partner, fitting.contains(where: { world.hosts[$0].partner == job.partner }) {
                problems.append("job \(job.id) borrowed host \(host.id) though its partner's own eligible hosts had room")
            }
            free[h].cpu -= need.cpuMillis
            free[h].memory -= need.memoryBytes
            free[h].gpus.subtract(placement.gpuIndices)
        }
    }
}
