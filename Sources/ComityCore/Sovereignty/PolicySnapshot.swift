import Foundation

/// What the rules are evaluated against, besides the rules themselves: the federation's entities.
public struct FederationFacts: Sendable, Hashable {
    /// Jurisdiction code → the jurisdiction containing it (`DE` → `EU`).
    public var jurisdictions: [String: String?]
    public var partners: [String: PartnerFacts]
    public var projects: [String: ProjectFacts]

    public init(jurisdictions: [String: String?] = [:], partners: [String: PartnerFacts] = [:], projects: [String: ProjectFacts] = [:]) {
        self.jurisdictions = jurisdictions
        self.partners = partners
        self.projects = projects
    }
}

public struct PartnerFacts: Sendable, Hashable {
    public var commercial: Bool
    public init(commercial: Bool = false) { self.commercial = commercial }
}

public struct ProjectFacts: Sendable, Hashable {
    public var partner: String
    /// What the project is for (`health-research`), matched against datasets' `use.purposes`.
    public var purpose: String?
    public var commercial: Bool

    public init(partner: String, purpose: String? = nil, commercial: Bool = false) {
        self.partner = partner
        self.purpose = purpose
        self.commercial = commercial
    }
}

/// A job as the rules see it.
public struct JobFacts: Sendable, Hashable {
    public var project: String
    public var partner: String
    public var kind: JobKind
    /// Datasets and models the job reads.
    public var inputs: [String]
    public var maxRuntimeSeconds: Int64
    /// Whether the job asks for the network (`network: true`); datasets that are not public forbid it by default.
    public var network: Bool
    /// The strictest class among the inputs (filled in by the evaluator).
    public internal(set) var dataClass: DataClass = .public

    public init(
        project: String, partner: String, kind: JobKind = .training, inputs: [String] = [], maxRuntimeSeconds: Int64 = 3600,
        network: Bool = false
    ) {
        self.project = project
        self.partner = partner
        self.kind = kind
        self.inputs = inputs
        self.maxRuntimeSeconds = maxRuntimeSeconds
        self.network = network
    }
}

public enum HostCondition: String, Sendable, Hashable, Codable {
    case up, draining, down
}

/// A host as the rules see it.
public struct HostFacts: Sendable, Hashable {
    public var id: Int64
    public var name: String
    public var partner: String
    public var region: String
    /// The region's jurisdiction.
    public var jurisdiction: String
    public var labels: [String: String]
    public var condition: HostCondition
    /// How the host runs jobs: only ``RunnerKind/sandbox`` hosts take jobs whose data is not public.
    public var runner: RunnerKind

    public init(
        id: Int64, name: String, partner: String, region: String, jurisdiction: String, labels: [String: String] = [:],
        condition: HostCondition = .up, runner: RunnerKind = .process
    ) {
        self.id = id
        self.name = name
        self.partner = partner
        self.region = region
        self.jurisdiction = jurisdiction
        self.labels = labels
        self.condition = condition
        self.runner = runner
    }

    /// What evaluation reads of a host: hosts with the same key get the same verdict for every job.
    public var policyKey: PolicyHostKey {
        PolicyHostKey(partner: partner, region: region, jurisdiction: jurisdiction, labels: labels, condition: condition, runner: runner)
    }
}

public struct PolicyHostKey: Sendable, Hashable {
    public var partner: String
    public var region: String
    public var jurisdiction: String
    public var labels: [String: String]
    public var condition: HostCondition
    public var runner: RunnerKind
}

/// Every applied version of every rule document, with the federation's entities: enough to evaluate any job on any
/// host at any time. Pure and immutable; the store rebuilds it when a rule or an entity changes.
public struct PolicySnapshot: Sendable {
    public let facts: FederationFacts
    /// Versions of each document, ascending.
    public let versions: [PolicyKey: [PolicyVersion]]

    /// Every time at which some version takes effect, ascending.
    let changeTimes: [Date]
    /// The rules in force when the snapshot was made, valid for every time in `presentSpan` (between the last
    /// version that took effect and the next announced one): evaluation at "now" never rebuilds them.
    let present: ActivePolicies
    let presentSpan: Range<Date>

    public init(facts: FederationFacts, versions: [PolicyVersion], now: Date = Date()) {
        self.facts = facts
        var grouped: [PolicyKey: [PolicyVersion]] = [:]
        for version in versions { grouped[version.document.key, default: []].append(version) }
        let sorted = grouped.mapValues { $0.sorted { $0.version < $1.version } }
        self.versions = sorted
        let times = Set(versions.map(\.effectiveFrom)).sorted()
        changeTimes = times
        let from = times.last { $0 <= now } ?? .distantPast
        let until = times.first { $0 > now } ?? .distantFuture
        presentSpan = from..<until
        present = Self.active(sorted, facts: facts, at: now)
    }

    static func active(_ versions: [PolicyKey: [PolicyVersion]], facts: FederationFacts, at time: Date) -> ActivePolicies {
        var chosen: [PolicyVersion] = []
        for list in versions.values {
            if let version = list.last(where: { $0.effectiveFrom <= time }) { chosen.append(version) }
        }
        return ActivePolicies(facts: facts, versions: chosen)
    }

    /// Until when ``active(at:)`` for the present costs nothing (the next announced version takes effect then).
    public var presentValidUntil: Date { presentSpan.upperBound }

    /// The rules in force at `time`: for each document, its latest version already effective.
    public func active(at time: Date) -> ActivePolicies {
        presentSpan.contains(time) ? present : Self.active(versions, facts: facts, at: time)
    }

    /// Times in `(after, until]` at which an announced version takes effect, ascending.
    public func changes(after: Date, until: Date) -> [Date] {
        if presentSpan.contains(after), until < presentSpan.upperBound { return [] }
        return changeTimes.filter { $0 > after && $0 <= until }
    }

    /// The latest version of a document (effective or announced).
    public func latest(_ key: PolicyKey) -> PolicyVersion? { versions[key]?.last }

    /// Whether `job` may run on `host` at `time`, with every failing rule. Also checks every version already
    /// announced to take effect while the job could still be running (`max_runtime`): a host that such a version
    /// would exclude is excluded now with `POLICY_FUTURE_CONFLICT` (recurring donor windows are not looked ahead).
    public func evaluate(_ job: JobFacts, on host: HostFacts, at time: Date) -> Verdict {
        evaluate(active(at: time).prepare(job), on: host, at: time)
    }

    /// ``evaluate(_:on:at:)`` for a job prepared once (per job class) against `active(at: time)`.
    ///
    /// - Parameter decideOnly: stop at the first failing rule and build no text (a scheduling pass).
    public func evaluate(_ prepared: PreparedJob, on host: HostFacts, at time: Date, decideOnly: Bool = false) -> Verdict {
        let present = active(at: time)
        let job = prepared.policiesID == present.id ? prepared : present.prepare(prepared.facts)
        var verdict = present.evaluate(job, on: host, at: time, decideOnly: decideOnly)
        guard verdict.eligible else { return verdict }
        for change in changes(after: time, until: time.addingTimeInterval(TimeInterval(job.facts.maxRuntimeSeconds))) {
            let future = active(at: change)
            var up = host
            up.condition = .up  // the host's own state is not a rule
            let failures = future.evaluate(future.prepare(job.facts), on: up, at: change, checkWindows: false).failures
            guard !failures.isEmpty else { continue }
            let changed = versions.values.flatMap { $0 }.filter { $0.effectiveFrom == change }.map(\.label).sorted()
            verdict.fail(
                Reason(
                    .policyFutureConflict, subject: changed.joined(separator: ","), rule: changed.first, category: .policy,
                    detail: "\(changed.joined(separator: ", ")) takes effect at \(change.formatted(.iso8601)), before max_runtime ends, and would exclude this host: \(failures.map(\.label).joined(separator: ", "))",
                    brief: "from \(change.formatted(.iso8601))"))
            break
        }
        return verdict
    }
}

/// The rules in force at one time, with jurisdiction sets expanded.
public struct ActivePolicies: Sendable {
    public let facts: FederationFacts
    public let sets: [String: PolicyVersion]
    public let datasets: [String: PolicyVersion]
    public let donors: [String: PolicyVersion]
    public let federation: [PolicyVersion]
    /// Identifies exactly this set of versions (recorded with every decision).
    public let id: String
    /// Each donor policy's time zone, resolved once (`nil` when the identifier is unknown).
    let donorZones: [String: TimeZone]

    /// Jurisdiction → itself and every jurisdiction it contains.
    let descendants: [String: Set<String>]
    /// Set name → its members expanded to jurisdiction codes, or why it cannot be expanded.
    let expandedSets: [String: Result<[ExpandedMember], EvaluationError>]

    struct ExpandedMember: Sendable, Hashable {
        var code: String
        /// The member's own condition and those of every set member it was reached through: all must hold.
        var conditions: [LabelCondition]
    }

    struct EvaluationError: Error, Sendable, Hashable {
        var rule: String?
        var message: String
    }

    init(facts: FederationFacts, versions: [PolicyVersion]) {
        self.facts = facts
        var sets: [String: PolicyVersion] = [:]
        var datasets: [String: PolicyVersion] = [:]
        var donors: [String: PolicyVersion] = [:]
        var federation: [PolicyVersion] = []
        for version in versions {
            switch version.document.body {
            case .jurisdictionSet: sets[version.document.name] = version
            case .dataset: datasets[version.document.name] = version
            case .donorPolicy: donors[version.document.name] = version
            case .federation: federation.append(version)
            }
        }
        self.sets = sets
        self.datasets = datasets
        self.donors = donors
        self.donorZones = donors.compactMapValues { version in
            guard case .donorPolicy(let policy) = version.document.body else { return nil }
            return TimeZone(identifier: policy.timezone)
        }
        self.federation = federation.sorted { $0.document.name < $1.document.name }
        self.id = Self.identify(versions.map(\.label).sorted())

        var children: [String: [String]] = [:]
        for (code, parent) in facts.jurisdictions { if let parent { children[parent, default: []].append(code) } }
        var descendants: [String: Set<String>] = [:]
        for code in facts.jurisdictions.keys {
            var seen: Set<String> = [code]
            var stack = [code]
            while let next = stack.popLast() {
                for child in children[next] ?? [] where seen.insert(child).inserted { stack.append(child) }
            }
            descendants[code] = seen
        }
        self.descendants = descendants

        var expanded: [String: Result<[ExpandedMember], EvaluationError>] = [:]
        func expand(_ name: String, path: [String]) -> Result<[ExpandedMember], EvaluationError> {
            if let done = expanded[name] { return done }
            guard let version = sets[name], case .jurisdictionSet(let rule) = version.document.body else {
                return .failure(EvaluationError(rule: nil, message: "unknown jurisdiction set \(name)"))
            }
            if path.contains(name) {
                return .failure(EvaluationError(rule: version.label, message: "jurisdiction set \(name) contains itself (\((path + [name]).joined(separator: " → ")))"))
            }
            var members: [ExpandedMember] = []
            for member in rule.members {
                if let codes = descendants[member.ref] {
                    members += codes.sorted().map { ExpandedMember(code: $0, conditions: member.when.map { [$0] } ?? []) }
                } else if sets[member.ref] != nil {
                    switch expand(member.ref, path: path + [name]) {
                    case .success(let inner):
                        // A condition on the outer member applies to every inner member, together with their own.
                        members += inner.map { ExpandedMember(code: $0.code, conditions: $0.conditions + (member.when.map { [$0] } ?? [])) }
                    case .failure(let error):
                        let result = Result<[ExpandedMember], EvaluationError>.failure(error)
                        expanded[name] = result
                        return result
                    }
                } else {
                    let result = Result<[ExpandedMember], EvaluationError>.failure(
                        EvaluationError(rule: version.label, message: "\(version.label) names \(member.ref), which is neither a jurisdiction nor a set"))
                    expanded[name] = result
                    return result
                }
            }
            let result = Result<[ExpandedMember], EvaluationError>.success(members)
            expanded[name] = result
            return result
        }
        // In name order: which set a cycle is reported from must not depend on hash order (replays are byte for byte).
        for name in sets.keys.sorted() { _ = expand(name, path: []) }
        self.expandedSets = expanded
    }

    /// FNV-1a over the sorted version labels: a short, stable name for a set of versions.
    static func identify(_ labels: [String]) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in labels.joined(separator: "\n").utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x100_0000_01b3
        }
        let hex = String(hash, radix: 16)
        return "p" + String(repeating: "0", count: 16 - hex.count) + hex
    }

    /// Jurisdiction codes and set names expanded to member jurisdictions.
    func expand(_ refs: [String]) -> Result<[ExpandedMember], EvaluationError> {
        var members: [ExpandedMember] = []
        for ref in refs {
            if let codes = descendants[ref] {
                members += codes.map { ExpandedMember(code: $0, conditions: []) }
            } else if let set = expandedSets[ref] {
                switch set {
                case .success(let inner): members += inner
                case .failure(let error): return .failure(error)
                }
            } else {
                return .failure(EvaluationError(rule: nil, message: "\(ref) is neither a jurisdiction nor a jurisdiction set in force"))
            }
        }
        return .success(members)
    }

    /// Whether `host` is in the area `refs` name. Conditional members read the host's labels; a missing label is an
    /// evaluation error (fail closed), never a silent "no" (unless another condition of the same member is false).
    func contains(_ refs: [String], _ host: HostFacts) -> Result<Bool, EvaluationError> {
        // Fail closed first: one reference that cannot be resolved makes the whole area unknown.
        for ref in refs where descendants[ref] == nil {
            switch expandedSets[ref] {
            case nil: return .failure(EvaluationError(rule: nil, message: "\(ref) is neither a jurisdiction nor a jurisdiction set in force"))
            case .failure(let error)?: return .failure(error)
            case .success?: break
            }
        }
        // Then without building member lists: this runs for every (job class, host kind) a pass considers.
        var missing: String?
        for ref in refs {
            if let codes = descendants[ref] {
                if codes.contains(host.jurisdiction) { return .success(true) }
                continue
            }
            guard case .success(let members)? = expandedSets[ref] else { continue }
            for member in members where member.code == host.jurisdiction {
                var lacking: String?
                var holds = true
                for condition in member.conditions {
                    if let value = host.labels[condition.label] {
                        if value != condition.equals { holds = false }
                    } else {
                        lacking = condition.label
                    }
                }
                guard holds else { continue }
                guard let lacking else { return .success(true) }
                missing = lacking
            }
        }
        if let missing {
            return .failure(EvaluationError(rule: nil, message: "membership of \(host.jurisdiction) depends on host label \(missing), which \(host.name) lacks"))
        }
        return .success(false)
    }

    /// The jurisdictions an area could ever include (conditional members included), for the database's check and
    /// for rejecting jobs whose constraints intersect to nothing.
    func possibleCodes(_ refs: [String]) -> Set<String>? {
        guard case .success(let members) = expand(refs) else { return nil }
        return Set(members.map(\.code))
    }

    func certainCodes(_ refs: [String]) -> Set<String> {
        guard case .success(let members) = expand(refs) else { return [] }
        return Set(members.filter { $0.conditions.isEmpty }.map(\.code))
    }
}
