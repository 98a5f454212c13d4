import ComityCore
import Foundation

/// A small federation and helpers shared by the sovereignty tests: rule documents are written as JSON (what the CLI
/// sends after reading YAML) and go through the real parser.
enum Fixture {
    /// EU contains DE and FR; DE contains DE-BY (a region-level code). KE, UG, US, CH, JP and NO stand alone.
    static let facts = FederationFacts(
        jurisdictions: [
            "EU": nil, "DE": "EU", "FR": "EU", "DE-BY": "DE", "NO": nil, "CH": nil, "JP": nil, "US": nil, "KE": nil,
            "UG": nil,
        ],
        partners: [
            "uon": PartnerFacts(), "mak": PartnerFacts(), "tum": PartnerFacts(), "inria": PartnerFacts(),
            "acme": PartnerFacts(commercial: true),
        ],
        projects: [
            "asr": ProjectFacts(partner: "uon", purpose: "health-research"),
            "malaria": ProjectFacts(partner: "mak", purpose: "health-research"),
            "vision": ProjectFacts(partner: "tum", purpose: "general"),
            "imaging": ProjectFacts(partner: "inria", purpose: "health-research", commercial: true),
            "ads": ProjectFacts(partner: "acme", purpose: "marketing"),
            "crops": ProjectFacts(partner: "mak"),
        ]
    )

    /// A Wednesday, 12:00 UTC (15:00 in Nairobi).
    static let noon = time("2026-06-10T12:00:00Z")

    static func time(_ text: String) -> Date {
        try! Date(text, strategy: .iso8601)
    }

    static func json(_ text: String) throws -> JSONValue {
        try JSONDecoder().decode(JSONValue.self, from: Data(text.utf8))
    }

    static func parse(_ text: String) throws -> Result<PolicyDocument, ValidationFailure> {
        PolicyDocument.parse(try json(text))
    }

    static func document(_ text: String) throws -> PolicyDocument {
        try parse(text).get()
    }

    /// Every document as version 1, 2, … of its name in the order given, effective from its `effective_from` or
    /// long ago.
    static func snapshot(_ documents: [String], facts: FederationFacts = facts) throws -> PolicySnapshot {
        var counts: [PolicyKey: Int] = [:]
        let versions = try documents.map { text in
            let document = try document(text)
            counts[document.key, default: 0] += 1
            return PolicyVersion(
                document: document, version: counts[document.key]!,
                effectiveFrom: document.effectiveFrom ?? time("2020-01-01T00:00:00Z"))
        }
        return PolicySnapshot(facts: facts, versions: versions)
    }

    /// A host; sandboxed unless said otherwise, so that data rules other than the sandbox's decide.
    static func host(
        _ id: Int64, _ partner: String, _ jurisdiction: String, labels: [String: String] = [:],
        condition: HostCondition = .up, runner: RunnerKind = .sandbox
    ) -> HostFacts {
        HostFacts(
            id: id, name: "\(partner)-\(id)", partner: partner, region: jurisdiction.lowercased(),
            jurisdiction: jurisdiction, labels: labels, condition: condition, runner: runner)
    }

    static func job(
        _ project: String, inputs: [String] = [], kind: JobKind = .training, runtime: Int64 = 3600, partner: String? = nil,
        network: Bool = false
    ) -> JobFacts {
        JobFacts(
            project: project, partner: partner ?? facts.projects[project]?.partner ?? "nobody", kind: kind, inputs: inputs,
            maxRuntimeSeconds: runtime, network: network)
    }

    /// A donor policy of `partner` taking every guest, in `timezone`.
    static func openDonor(_ partner: String, timezone: String = "UTC") -> String {
        #"{"kind": "donor-policy", "name": "\#(partner)", "timezone": "\#(timezone)", "permit": [{"id": "all"}]}"#
    }

    static func dataset(
        _ name: String, steward: String = "uon", extra: String = ""
    ) -> String {
        #"{"kind": "dataset", "name": "\#(name)", "steward": "\#(steward)"\#(extra.isEmpty ? "" : ", " + extra)}"#
    }
}

extension Verdict {
    var codes: [Reason.Code] { failures.map(\.code) }
    var codeSet: Set<Reason.Code> { Set(failures.map(\.code)) }
}
