import ArgumentParser
import ComityCore
import Foundation

/// `comity-bench rules`: what the sovereignty engine costs per placement decision, as hosts, rules and job classes
/// grow. Pure (no database): the same evaluation and placement the scheduling pass runs, on a synthetic federation.
struct RulesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rules",
        abstract: "Cost of sovereignty evaluation per placement decision (hosts × rule documents × job classes).",
        discussion: """
            Builds a federation of 40 jurisdictions (in a tree), 12 jurisdiction sets (nested, some conditional), \
            20 partners with donor policies (windows, forbids), a federation policy with forbids and export classes, \
            and N dataset documents (some derived from others); then, per size, a pass-like workload: 2,000 queued \
            jobs in 50 classes (each reading 0-3 datasets) on H hosts of 20 partners × 8 regions × 3 label sets. It \
            reports the uncached cost of one (job, host) evaluation, and for the pass: the time to decide \
            eligibility (memoized per job class and host key, as Store.schedulingPass does), the placer's time with \
            and without the rules, and the cost per placement decision (eligibility + placer time ÷ jobs examined).
            """
    )

    @Option(help: "Dataset document counts.") var datasets: String = "10,100,1000"
    @Option(help: "Host counts.") var hosts: String = "100,1000,10000"
    @Option(help: "Write the JSON object here.") var out: String?

    func run() async throws {
        var rng = SplitMix64(seed: 42)
        var results: [String: JSONValue] = [:]
        var decision: [String: JSONValue] = [:]
        var eligibility: [String: JSONValue] = [:]
        var evalMicros: Double = 0
        for documentCount in datasets.split(separator: ",").compactMap({ Int($0) }) {
            let world = SyntheticFederation(datasets: documentCount, rng: &rng)
            for hostCount in hosts.split(separator: ",").compactMap({ Int($0) }) {
                let pool = world.hosts(hostCount, rng: &rng)
                let jobs = world.jobs(2000, classes: 50, rng: &rng)
                let now = Date()
                // Uncached: one evaluation of a (job, host) pair.
                let sample = 2000
                let clock = ContinuousClock()
                var eligibleCount = 0
                let uncached = clock.measure {
                    for index in 0..<sample where world.snapshot.evaluate(jobs.facts[index % jobs.facts.count], on: pool.facts[index % pool.facts.count], at: now).eligible {
                        eligibleCount += 1
                    }
                }
                evalMicros = max(evalMicros, uncached.seconds * 1e6 / Double(sample))
                // The pass: eligibility memoized per (class, key), then the placer.
                var pairs = 0
                var placements: [Placement] = []
                let withRules = clock.measure {
                    // Exactly as Store.schedulingPass.
                    var memo = EligibilityMemo(snapshot: world.snapshot, classes: jobs.facts, hostKeys: pool.keyFacts, at: now)
                    placements = Placer.place(jobs.pending, on: pool.availability) { memo.eligible($0, $1) }
                    pairs = memo.evaluated
                }
                let withoutRules = clock.measure { _ = Placer.place(jobs.pending, on: pool.availability) }
                let size = "\(documentCount)x\(hostCount)"
                let perDecision = withRules.seconds * 1e6 / Double(jobs.pending.count)
                decision[size] = .number((perDecision * 100).rounded() / 100)
                eligibility[size] = .number(((withRules - withoutRules).seconds * 1e5).rounded() / 100)
                say(
                    "rules \(size): \(pairs) (class, host key) pairs evaluated for \(jobs.pending.count) jobs on \(hostCount) hosts "
                        + "(\(pool.keyFacts.count) host keys); pass with rules \(Self.ms(withRules)) ms, without \(Self.ms(withoutRules)) ms; "
                        + "\(String(format: "%.2f", perDecision)) µs per placement decision; \(placements.count) placed; "
                        + "one uncached evaluation \(String(format: "%.1f", uncached.seconds * 1e6 / Double(sample))) µs")
            }
        }
        results["rules_per_decision_us"] = .object(decision)
        results["rules_eligibility_ms"] = .object(eligibility)
        results["rules_eval_uncached_us"] = .number((evalMicros * 10).rounded() / 10)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        let data = try encoder.encode(JSONValue.object(results))
        if let out { try data.write(to: URL(fileURLWithPath: out)) } else { print(String(decoding: data, as: UTF8.self)) }
    }

    static func ms(_ duration: Duration) -> String { String(format: "%.1f", duration.seconds * 1000) }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}

/// SplitMix64: seeded, so every run measures the same federation.
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

/// A synthetic federation with every kind of rule.
struct SyntheticFederation {
    let snapshot: PolicySnapshot
    let jurisdictions: [String]
    let partners: [String]
    let projects: [String]
    let datasetNames: [String]
    let regions: [(name: String, jurisdiction: String)]

    init(datasets count: Int, rng: inout SplitMix64) {
        var facts = FederationFacts()
        var codes: [String] = []
        for index in 0..<40 {
            let code = "J\(index)"
            codes.append(code)
            // Every fifth jurisdiction contains the next four.
            facts.jurisdictions[code] = index % 5 == 0 ? .some(nil) : .some("J\(index - index % 5)")
        }
        jurisdictions = codes
        partners = (0..<20).map { "p\($0)" }
        for (index, partner) in partners.enumerated() { facts.partners[partner] = PartnerFacts(commercial: index % 7 == 0) }
        projects = (0..<40).map { "proj\($0)" }
        for (index, project) in projects.enumerated() {
            facts.projects[project] = ProjectFacts(partner: partners[index % partners.count], purpose: index % 2 == 0 ? "health-research" : "nlp")
        }
        regions = (0..<8).map { (name: "r\($0)", jurisdiction: codes[$0 * 5 + 1]) }
        var versions: [PolicyVersion] = []
        let past = Date(timeIntervalSince1970: 0)
        func add(_ name: String, _ body: PolicyBody) {
            versions.append(PolicyVersion(document: PolicyDocument(name: name, body: body), version: 1, effectiveFrom: past))
        }
        for index in 0..<12 {
            var members = (0..<4).map { SetMember(codes[(index * 3 + $0 * 5) % codes.count]) }
            if index % 3 == 0 { members.append(SetMember(codes[(index + 7) % codes.count], when: LabelCondition(label: "certified", equals: "true"))) }
            if index > 0, index % 4 == 0 { members.append(SetMember("SET\(index - 1)")) }
            add("SET\(index)", .jurisdictionSet(JurisdictionSetRule(members: members)))
        }
        for (index, partner) in partners.enumerated() {
            let window = TimeWindow(days: index % 2 == 0 ? nil : [.sat, .sun], fromMinute: 0, toMinute: 0)
            add(partner, .donorPolicy(DonorPolicy(
                timezone: ["UTC", "Africa/Nairobi", "Europe/Berlin", "Asia/Kolkata"][index % 4],
                permit: [
                    DonorRule(id: "friends", match: JobMatch(partners: Array(partners.shuffled(using: &rng).prefix(8)))),
                    DonorRule(id: "inference", match: JobMatch(kinds: [.inference]), windows: [window]),
                    DonorRule(id: "public", match: JobMatch(classes: [.public, .internal])),
                ],
                forbid: [DonorRule(id: "no-genomic", match: JobMatch(classes: [.genomic]))])))
        }
        add("guardrails", .federation(FederationPolicy(
            forbid: [
                FederationForbid(id: "sanctioned", match: JobMatch(partners: ["p19"]), jurisdictions: ["J35"]),
                FederationForbid(id: "indigenous", match: JobMatch(classes: [.indigenous]), jurisdictions: ["SET5"]),
            ],
            exportClasses: ["CTRL-A": ["SET2", "J0"]])))
        var names: [String] = []
        for index in 0..<count {
            let name = "ds\(index)"
            let allow: [String]? = index % 4 == 0 ? nil : [index % 2 == 0 ? "SET\(index % 12)" : codes[index % codes.count], codes[(index * 7) % codes.count]]
            let derived = index >= 10 && index % 10 == 0 ? [Inheritance(source: names[index - 3])] : []
            add(name, .dataset(DatasetRule(
                steward: partners[index % partners.count], dataClass: DataClass.allCases[index % 5],
                exportClass: index % 25 == 0 ? "CTRL-A" : nil,
                residency: Residency(allow: allow, deny: index % 9 == 0 ? ["J3"] : [], hostLabels: index % 11 == 0 ? ["tre": "true"] : [:]),
                use: UseConditions(purposes: index % 6 == 0 ? ["health-research"] : nil, nonCommercial: index % 8 == 0),
                derivedFrom: derived)))
            names.append(name)
        }
        datasetNames = names
        snapshot = PolicySnapshot(facts: facts, versions: versions)
    }

    struct Pool {
        var availability: [HostAvailability]
        var facts: [HostFacts]
        /// One host's facts per policy key.
        var keyFacts: [HostFacts]
    }

    func hosts(_ count: Int, rng: inout SplitMix64) -> Pool {
        var availability: [HostAvailability] = []
        var all: [HostFacts] = []
        var keys: [PolicyHostKey: Int] = [:]
        var keyFacts: [HostFacts] = []
        let labelSets: [[String: String]] = [[:], ["tre": "true"], ["certified": "true", "tre": "true"]]
        for index in 0..<count {
            let region = regions[index % regions.count]
            let partnerIndex = (index / regions.count) % partners.count
            // Sandbox hosts, so that the data rules, not the runner, decide where jobs with non-public data go.
            let facts = HostFacts(
                id: Int64(index + 1), name: "h\(index)", partner: partners[partnerIndex], region: region.name, jurisdiction: region.jurisdiction,
                labels: labelSets[index % labelSets.count], runner: .sandbox)
            let key: Int
            if let known = keys[facts.policyKey] {
                key = known
            } else {
                key = keyFacts.count
                keys[facts.policyKey] = key
                keyFacts.append(facts)
            }
            all.append(facts)
            let gpus = index % 4 == 0 ? (0..<8).map { GPU(index: $0, uuid: "G\(index)-\($0)", model: "NVIDIA H100 80GB HBM3", memoryBytes: 80 << 30) } : []
            availability.append(
                HostAvailability(
                    id: facts.id, freeCPUMillis: 64_000, freeMemoryBytes: 256 << 30, freeGPUs: gpus, totalGPUs: gpus.count,
                    partnerID: Int64(partnerIndex + 1), policyKey: key))
        }
        return Pool(availability: availability, facts: all, keyFacts: keyFacts)
    }

    struct Jobs {
        var pending: [PendingJob]
        /// Facts per class.
        var facts: [JobFacts]
    }

    func jobs(_ count: Int, classes: Int, rng: inout SplitMix64) -> Jobs {
        let facts = (0..<classes).map { index -> JobFacts in
            let project = projects[index % projects.count]
            let inputs = (0..<(index % 4)).map { _ in datasetNames.randomElement(using: &rng)! }
            return JobFacts(
                project: project, partner: partners[index % partners.count], kind: index % 3 == 0 ? .inference : .training,
                inputs: Array(Set(inputs)).sorted(), maxRuntimeSeconds: 3600)
        }
        let pending = (0..<count).map { index -> PendingJob in
            let policyClass = index % classes
            return PendingJob(
                id: Int64(index + 1),
                resources: ResourceRequest(cpuMillis: 1000, memoryBytes: 1 << 30, gpus: index % 20 == 0 ? 1 : 0),
                priority: 50, partnerID: Int64(policyClass % partners.count + 1), policyClass: policyClass)
        }
        return Jobs(pending: pending, facts: facts)
    }
}
