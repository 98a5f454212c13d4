import ComityCore
import Foundation

/// A random federation for the property test: jurisdiction trees, sets, partners, projects, hosts, datasets (some
/// derived), donor and federation policies (some with a second version, past or announced), and jobs.
///
/// Kept in plain types of its own: the engine sees it only as rule documents (``documents``, parsed by the real
/// parser) and facts; ``ReferenceChecker`` reads it directly.
struct PolicyWorld: Sendable, CustomStringConvertible {
    struct Condition: Sendable, Hashable {
        var label: String
        var equals: String
    }

    struct Member: Sendable {
        var ref: String
        var when: Condition?
    }

    struct Match: Sendable {
        var partners: [String]?
        var projects: [String]?
        var kinds: [JobKind]?
        var classes: [DataClass]?
    }

    struct Window: Sendable {
        var days: [Weekday]?
        var from: Int
        var to: Int
    }

    struct Source: Sendable {
        var name: String
        var relaxed: Bool
    }

    struct Dataset: Sendable {
        var steward: String
        var dataClass: DataClass
        var exportClass: String?
        var allow: [String]?
        var deny: [String]
        var hostPartners: [String]?
        var hostLabels: [String: String]
        var purposes: [String]?
        var nonCommercial: Bool
        var usePartners: [String]?
        var useProjects: [String]?
        var useKinds: [JobKind]?
        var derivedFrom: [Source]
        /// `network: allow` (`true`) or `deny` (`false`); `nil` is the default (denied unless public).
        var network: Bool? = nil
    }

    struct Rule: Sendable {
        var id: String
        var match: Match
        var windows: [Window]?
        var mustFinish: Bool
    }

    struct Donor: Sendable {
        var timezone: String
        var permits: [Rule]
        var forbids: [Rule]
    }

    struct Forbid: Sendable {
        var id: String
        var match: Match
        var jurisdictions: [String]?
    }

    struct Federation: Sendable {
        var forbids: [Forbid]
        var exportClasses: [String: [String]]
    }

    /// One version of a document, in version order.
    struct Versioned<Value: Sendable>: Sendable {
        var from: Date
        var value: Value
    }

    struct Project: Sendable {
        var partner: String
        var purpose: String?
        var commercial: Bool
    }

    struct Host: Sendable {
        var id: Int64
        var partner: String
        var jurisdiction: String
        var labels: [String: String]
        var condition: HostCondition
        var cpus: Int
        var memoryGi: Int
        var gpus: Int
        var runner: RunnerKind = .sandbox
    }

    struct Job: Sendable {
        var id: Int64
        var project: String
        var partner: String
        var kind: JobKind
        var inputs: [String]
        var runtime: Int64
        var cpus: Int
        var memoryGi: Int
        var gpus: Int
        var network = false
    }

    var now: Date
    /// Every jurisdiction with the one containing it.
    var parents: [String: String?]
    /// Partner → commercial.
    var partners: [String: Bool]
    var projects: [String: Project]
    var sets: [String: [Member]]
    var datasets: [String: [Versioned<Dataset>]]
    var donors: [String: [Versioned<Donor>]]
    var federation: [Versioned<Federation>]
    var hosts: [Host]
    var jobs: [Job]

    // MARK: Generation

    static let start2026 = Date(timeIntervalSince1970: 1_767_225_600)
    /// Daylight-saving changes of 2026 in Europe and the US.
    static let clockChanges = [
        "2026-03-08T07:00:00Z", "2026-03-29T01:00:00Z", "2026-10-25T01:00:00Z", "2026-11-01T06:00:00Z",
    ].map(Fixture.time)
    static let zones = ["UTC", "Africa/Nairobi", "Europe/Berlin", "America/New_York"]
    /// (from, to) in minutes: plain days, nights past midnight, whole days, a start in Berlin's skipped hour.
    static let windowShapes = [
        (18 * 60, 6 * 60), (9 * 60, 17 * 60), (0, 24 * 60), (22 * 60, 2 * 60), (6 * 60, 6 * 60), (150, 300), (0, 0),
        (12 * 60, 24 * 60), (0, 12 * 60), (60, 240),
    ]
    /// Whole quarter hours, so that windows (on half hours in zones with whole-hour offsets) line up with them.
    static let runtimes: [Int64] = [900, 3600, 9000, 21600, 28800]

    static func random<R: RandomNumberGenerator>(using rng: inout R) -> PolicyWorld {
        let now =
            rng.chance(0.25)
            ? rng.pick(clockChanges).addingTimeInterval(Double(rng.int(-48...48)) * 900)
            : start2026.addingTimeInterval(Double(rng.int(0...(365 * 96 - 1))) * 900)

        var parents: [String: String?] = [:]
        var codes: [String] = []
        for index in 0..<rng.int(3...7) {
            let parent: String? = !codes.isEmpty && rng.chance(0.5) ? rng.pick(codes) : nil
            parents.updateValue(parent, forKey: "J\(index)")
            codes.append("J\(index)")
        }
        let partnerNames = (0..<rng.int(2...4)).map { "p\($0)" }
        var partners: [String: Bool] = [:]
        for name in partnerNames { partners[name] = rng.chance(0.2) }
        var projects: [String: Project] = [:]
        for index in 0..<rng.int(2...5) {
            projects["q\(index)"] = Project(
                partner: rng.pick(partnerNames), purpose: rng.pick([nil, "health", "general"]), commercial: rng.chance(0.15))
        }
        let projectNames = projects.keys.sorted()

        func condition() -> Condition {
            Condition(label: rng.pick(["dpf", "tre"]), equals: rng.chance(0.8) ? "true" : "false")
        }
        let setNames = (0..<rng.int(0...4)).map { "S\($0)" }
        var sets: [String: [Member]] = [:]
        for (index, name) in setNames.enumerated() {
            sets[name] = (0..<rng.int(1...3)).map { _ in
                // Mostly codes and earlier sets; now and then any set, which may close a loop.
                let ref: String
                if rng.chance(0.6) || setNames.isEmpty {
                    ref = rng.pick(codes)
                } else if index > 0, rng.chance(0.85) {
                    ref = rng.pick(Array(setNames[..<index]))
                } else {
                    ref = rng.pick(setNames)
                }
                return Member(ref: ref, when: rng.chance(setNames.contains(ref) ? 0.6 : 0.35) ? condition() : nil)
            }
        }
        let areas = codes + setNames
        func refs() -> [String] { rng.subset(areas, upTo: 2) }
        func match(_ allowEmpty: Bool = true) -> Match {
            var match = Match(
                partners: rng.chance(0.35) ? rng.subset(partnerNames, upTo: 2) : nil,
                projects: rng.chance(0.2) ? rng.subset(projectNames, upTo: 2) : nil,
                kinds: rng.chance(0.3) ? [rng.pick(JobKind.allCases)] : nil,
                classes: rng.chance(0.25) ? rng.subset(DataClass.allCases, upTo: 3) : nil)
            if !allowEmpty, match.partners == nil, match.projects == nil { match.projects = [rng.pick(projectNames)] }
            return match
        }
        func version<Value>(_ value: Value) -> Versioned<Value> {
            Versioned(from: now.addingTimeInterval(-30 * 86400), value: value)
        }
        func laterVersion<Value>(_ value: Value) -> Versioned<Value> {
            // Announced for later (mostly within a job's max_runtime), or already in force.
            let quarters = Double(rng.int(1...40))
            return Versioned(from: now.addingTimeInterval((rng.chance(0.7) ? 900 : -900) * quarters), value: value)
        }

        let datasetNames = (0..<rng.int(1...5)).map { "d\($0)" }
        var datasets: [String: [Versioned<Dataset>]] = [:]
        for (index, name) in datasetNames.enumerated() {
            var derived: [Source] = []
            if index > 0, rng.chance(0.35) {
                derived = rng.subset(Array(datasetNames[..<index]), upTo: 2).map { Source(name: $0, relaxed: rng.chance(0.3)) }
            }
            if rng.chance(0.04) { derived.append(Source(name: "ghost", relaxed: false)) }
            let dataset = Dataset(
                steward: rng.pick(partnerNames), dataClass: rng.pick(DataClass.allCases),
                exportClass: rng.chance(0.15) ? rng.pick(["X1", "X1", "X2"]) : nil,
                allow: rng.chance(0.4) ? refs() : nil, deny: rng.chance(0.15) ? refs() : [],
                hostPartners: rng.chance(0.15) ? rng.subset(partnerNames, upTo: 2) : nil,
                hostLabels: rng.chance(0.15) ? ["tre": "true"] : [:],
                purposes: rng.chance(0.15) ? rng.pick([["health"], ["health", "general"]]) : nil,
                nonCommercial: rng.chance(0.15), usePartners: rng.chance(0.1) ? rng.subset(partnerNames, upTo: 2) : nil,
                useProjects: rng.chance(0.08) ? rng.subset(projectNames, upTo: 3) : nil,
                useKinds: rng.chance(0.1) ? [rng.pick(JobKind.allCases)] : nil, derivedFrom: derived)
            var stated = dataset
            if rng.chance(0.3) { stated.network = rng.chance(0.5) }
            datasets[name] = [version(stated)]
            if rng.chance(0.2) {
                var next = stated
                next.allow = rng.chance(0.7) ? refs() : nil
                datasets[name]!.append(laterVersion(next))
            }
        }

        var donors: [String: [Versioned<Donor>]] = [:]
        for partner in partnerNames where rng.chance(0.75) {
            var ruleCount = 0
            func rules(_ count: Int, windows: Bool) -> [Rule] {
                (0..<count).map { _ in
                    ruleCount += 1
                    let shaped: [Window]? =
                        windows && rng.chance(0.4)
                        ? (0..<rng.int(1...2)).map { _ in
                            let (from, to) = rng.pick(windowShapes)
                            return Window(days: rng.chance(0.4) ? rng.subset(Weekday.allCases, upTo: 4) : nil, from: from, to: to)
                        } : nil
                    return Rule(id: "r\(ruleCount)", match: match(), windows: shaped, mustFinish: shaped != nil && rng.chance(0.5))
                }
            }
            let donor = Donor(
                timezone: rng.pick(zones), permits: rules(rng.int(0...3), windows: true), forbids: rules(rng.int(0...1), windows: false))
            donors[partner] = [version(donor)]
            if rng.chance(0.15) {
                var next = donor
                next.permits = rules(rng.int(0...2), windows: true)
                donors[partner]!.append(laterVersion(next))
            }
        }

        var federation: [Versioned<Federation>] = []
        if rng.chance(0.6) {
            let forbids = (0..<rng.int(0...2)).map { index in
                rng.chance(0.7)
                    ? Forbid(id: "f\(index)", match: match(), jurisdictions: refs())
                    : Forbid(id: "f\(index)", match: match(false), jurisdictions: nil)
            }
            federation = [version(Federation(forbids: forbids, exportClasses: ["X1": refs()]))]
        }

        let hosts = (0..<rng.int(1...8)).map { index in
            var labels: [String: String] = [:]
            if rng.chance(0.6) { labels["dpf"] = rng.pick(["true", "false"]) }
            if rng.chance(0.5) { labels["tre"] = rng.pick(["true", "false"]) }
            if rng.chance(0.1) { labels["timezone"] = rng.pick(["Europe/Berlin", "America/New_York", "Mars/Base"]) }
            return Host(
                id: Int64(100 + index), partner: rng.pick(partnerNames), jurisdiction: rng.pick(codes), labels: labels,
                condition: rng.chance(0.1) ? rng.pick([HostCondition.down, .draining]) : .up, cpus: rng.pick([2, 4, 8, 16]),
                memoryGi: rng.pick([8, 16, 64]), gpus: rng.pick([0, 0, 1, 2, 4, 8]), runner: rng.chance(0.7) ? .sandbox : .process)
        }

        // A few classes of job (same project, kind, inputs and runtime), each submitted a few times.
        let classes: [(project: String, partner: String, kind: JobKind, inputs: [String], runtime: Int64, network: Bool)] = (0..<rng.int(1...5)).map { _ in
            let project = rng.chance(0.04) ? "q9" : rng.pick(projectNames)
            var inputs = rng.chance(0.2) ? [] : rng.subset(datasetNames, upTo: 2)
            if rng.chance(0.04) { inputs.append("d9") }
            return (
                project, projects[project]?.partner ?? rng.pick(partnerNames), rng.pick(JobKind.allCases), inputs,
                rng.pick(runtimes), rng.chance(0.25)
            )
        }
        let jobs = (0..<rng.int(1...12)).map { index in
            let template = rng.pick(classes)
            return Job(
                id: Int64(1000 + index), project: template.project, partner: template.partner, kind: template.kind,
                inputs: template.inputs, runtime: template.runtime, cpus: rng.pick([1, 2, 4]), memoryGi: rng.pick([1, 4, 8]),
                gpus: rng.pick([0, 0, 1, 2]), network: template.network)
        }

        return PolicyWorld(
            now: now, parents: parents, partners: partners, projects: projects, sets: sets, datasets: datasets, donors: donors,
            federation: federation, hosts: hosts, jobs: jobs)
    }

    // MARK: What the engine sees

    var facts: FederationFacts {
        FederationFacts(
            jurisdictions: parents, partners: partners.mapValues { PartnerFacts(commercial: $0) },
            projects: projects.mapValues { ProjectFacts(partner: $0.partner, purpose: $0.purpose, commercial: $0.commercial) })
    }

    func hostFacts(_ host: Host) -> HostFacts {
        HostFacts(
            id: host.id, name: "h\(host.id)", partner: host.partner, region: host.jurisdiction.lowercased(),
            jurisdiction: host.jurisdiction, labels: host.labels, condition: host.condition, runner: host.runner)
    }

    func jobFacts(_ job: Job) -> JobFacts {
        JobFacts(
            project: job.project, partner: job.partner, kind: job.kind, inputs: job.inputs, maxRuntimeSeconds: job.runtime, network: job.network)
    }

    /// Every version of every document, as JSON, in version order.
    var documents: [JSONValue] {
        var documents: [JSONValue] = []
        for name in sets.keys.sorted() {
            let members: [JSONValue] = sets[name]!.map { member in
                guard let when = member.when else { return .string(member.ref) }
                return .object([
                    (sets[member.ref] == nil ? "jurisdiction" : "set"): .string(member.ref),
                    "when": .object(["label": .string(when.label), "equals": .string(when.equals)]),
                ])
            }
            documents.append(.object(["kind": .string("jurisdiction-set"), "name": .string(name), "members": .array(members)]))
        }
        for name in datasets.keys.sorted() {
            for version in datasets[name]! {
                let d = version.value
                var residency: [String: JSONValue] = [:]
                residency["allow"] = d.allow.map(Self.list)
                if !d.deny.isEmpty { residency["deny"] = Self.list(d.deny) }
                residency["partners"] = d.hostPartners.map(Self.list)
                if !d.hostLabels.isEmpty { residency["host_labels"] = .object(d.hostLabels.mapValues(JSONValue.string)) }
                var use: [String: JSONValue] = ["non_commercial": .bool(d.nonCommercial)]
                use["purposes"] = d.purposes.map(Self.list)
                use["partners"] = d.usePartners.map(Self.list)
                use["projects"] = d.useProjects.map(Self.list)
                use["kinds"] = d.useKinds.map { Self.list($0.map(\.rawValue)) }
                var object: [String: JSONValue] = [
                    "kind": .string("dataset"), "name": .string(name), "steward": .string(d.steward), "class": .string(d.dataClass.rawValue),
                    "effective_from": Self.time(version.from), "residency": .object(residency), "use": .object(use),
                    "derived_from": .array(
                        d.derivedFrom.map { source in
                            guard source.relaxed, let steward = datasets[source.name]?.first?.value.steward else { return .string(source.name) }
                            return .object([
                                "source": .string(source.name),
                                "relaxed": .object(["by": .string(steward), "attestation": .string("anonymity report")]),
                            ])
                        }),
                ]
                object["export_class"] = d.exportClass.map(JSONValue.string)
                // Both spellings the parser reads.
                object["network"] = d.network.map { $0 ? (name.hasSuffix("1") ? .bool(true) : .string("allow")) : .string("deny") }
                documents.append(.object(object))
            }
        }
        for partner in donors.keys.sorted() {
            for version in donors[partner]! {
                let donor = version.value
                func rule(_ rule: Rule) -> JSONValue {
                    var object = Self.match(rule.match)
                    object["id"] = .string(rule.id)
                    if let windows = rule.windows {
                        object["windows"] = .array(
                            windows.map { window in
                                var object: [String: JSONValue] = ["from": Self.clock(window.from), "to": Self.clock(window.to)]
                                object["days"] = window.days.map { Self.list($0.map(\.rawValue)) }
                                return .object(object)
                            })
                        object["must_finish_within_window"] = .bool(rule.mustFinish)
                    }
                    return .object(object)
                }
                documents.append(
                    .object([
                        "kind": .string("donor-policy"), "name": .string(partner), "timezone": .string(donor.timezone),
                        "effective_from": Self.time(version.from), "permit": .array(donor.permits.map(rule)),
                        "forbid": .array(donor.forbids.map(rule)),
                    ]))
            }
        }
        for version in federation {
            let forbids: [JSONValue] = version.value.forbids.map { forbid in
                var object = Self.match(forbid.match)
                object["id"] = .string(forbid.id)
                object["jurisdictions"] = forbid.jurisdictions.map(Self.list)
                return .object(object)
            }
            documents.append(
                .object([
                    "kind": .string("federation"), "name": .string("guardrails"), "effective_from": Self.time(version.from), "forbid": .array(forbids),
                    "export_classes": .object(version.value.exportClasses.mapValues(Self.list)),
                ]))
        }
        return documents
    }

    static func list(_ items: [String]) -> JSONValue { .array(items.map(JSONValue.string)) }
    static func time(_ date: Date) -> JSONValue { .string(date.formatted(.iso8601)) }
    static func clock(_ minute: Int) -> JSONValue { .string(String(format: "%02d:%02d", minute / 60, minute % 60)) }

    static func match(_ match: Match) -> [String: JSONValue] {
        var object: [String: JSONValue] = [:]
        object["partners"] = match.partners.map(list)
        object["projects"] = match.projects.map(list)
        object["kinds"] = match.kinds.map { list($0.map(\.rawValue)) }
        object["classes"] = match.classes.map { list($0.map(\.rawValue)) }
        return object
    }

    var description: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let text = documents.map { String(decoding: (try? encoder.encode($0)) ?? Data(), as: UTF8.self) }
        let tree = parents.keys.sorted().map { "\($0)<\((parents[$0] ?? nil) ?? "-")" }
        return """
            now \(now.formatted(.iso8601)); jurisdictions \(tree.joined(separator: " ")); partners \(partners.keys.sorted().map { "\($0)\(partners[$0]! ? "(commercial)" : "")" })
            projects \(projects.keys.sorted().map { "\($0): \(projects[$0]!)" })
            \(text.joined(separator: "\n"))
            hosts \(hosts.map { "\($0.id) \($0.partner) \($0.jurisdiction) \($0.labels) \($0.condition) \($0.runner.rawValue) \($0.cpus)cpu \($0.memoryGi)Gi \($0.gpus)gpu" })
            jobs \(jobs.map { "\($0.id) \($0.project)/\($0.partner) \($0.kind) \($0.inputs)\($0.network ? " network" : "") \($0.runtime)s \($0.cpus)cpu \($0.memoryGi)Gi \($0.gpus)gpu" })
            """
    }
}

extension RandomNumberGenerator {
    mutating func chance(_ probability: Double) -> Bool { Double.random(in: 0..<1, using: &self) < probability }
    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &self) }
    mutating func pick<T>(_ items: [T]) -> T { items.randomElement(using: &self)! }
    /// One to `limit` distinct items, in random order.
    mutating func subset<T>(_ items: [T], upTo limit: Int) -> [T] {
        Array(items.shuffled(using: &self).prefix(int(1...max(1, min(limit, items.count)))))
    }
}
