import ComityCore
import Foundation
import Testing

@Suite("Sovereignty rule documents: parsing names every bad field")
struct SovereigntyParserTests {
    func errors(_ text: String) throws -> [FieldError] {
        switch try Fixture.parse(text) {
        case .success(let document): Issue.record("expected errors, parsed \(document)"); return []
        case .failure(let failure): return failure.errors
        }
    }

    @Test("a dataset with every field parses to the model")
    func datasetParses() throws {
        let document = try Fixture.document(
            """
            {"kind": "dataset", "name": "ke-health", "steward": "uon", "class": "health", "export_class": "CTRL-A",
             "reason": "Kenyan law", "effective_from": "2027-01-01T00:00:00Z",
             "residency": {"allow": ["KE", "EAC"], "deny": ["US"], "partners": ["uon", "mak"], "host_labels": {"tre": "true", "tier": 3}},
             "use": {"purposes": ["health-research"], "non_commercial": true, "partners": ["uon"], "projects": ["asr"], "kinds": ["inference"]},
             "derived_from": ["raw", {"source": "notes", "relaxed": {"by": "uon", "attestation": "k-anon-2026-04"}}]}
            """)
        #expect(document.key == PolicyKey(kind: .dataset, name: "ke-health"))
        #expect(document.effectiveFrom == Fixture.time("2027-01-01T00:00:00Z"))
        #expect(document.reason == "Kenyan law")
        guard case .dataset(let rule) = document.body else {
            Issue.record("not a dataset")
            return
        }
        #expect(rule.steward == "uon")
        #expect(rule.dataClass == .health)
        #expect(rule.exportClass == "CTRL-A")
        #expect(
            rule.residency
                == Residency(allow: ["KE", "EAC"], deny: ["US"], partners: ["uon", "mak"], hostLabels: ["tre": "true", "tier": "3"]))
        #expect(
            rule.use
                == UseConditions(purposes: ["health-research"], nonCommercial: true, partners: ["uon"], projects: ["asr"], kinds: [.inference]))
        #expect(
            rule.derivedFrom == [
                Inheritance(source: "raw"),
                Inheritance(source: "notes", relaxed: Relaxation(by: "uon", attestation: "k-anon-2026-04")),
            ])
    }

    @Test("an unknown field is named with a suggestion, at the top level and nested")
    func unknownFieldSuggests() throws {
        let top = try errors(#"{"kind": "dataset", "name": "d", "steward": "uon", "residancy": {"allow": ["KE"]}}"#)
        #expect(top.map(\.field) == ["residancy"])
        #expect(top.first?.message.contains(#"did you mean "residency"?"#) == true)

        let nested = try errors(#"{"kind": "dataset", "name": "d", "steward": "uon", "residency": {"alow": ["KE"]}}"#)
        #expect(nested.map(\.field) == ["residency.alow"])
        #expect(nested.first?.message.contains(#"did you mean "allow"?"#) == true)

        let inRule = try errors(#"{"kind": "donor-policy", "name": "uon", "permit": [{"partner": ["tum"]}]}"#)
        #expect(inRule.map(\.field) == ["permit[0].partner"])
        #expect(inRule.first?.message.contains(#"did you mean "partners"?"#) == true)
    }

    @Test("an unknown kind suggests the closest one")
    func unknownKind() throws {
        let found = try errors(#"{"kind": "datset", "name": "d"}"#)
        #expect(found.map(\.field) == ["kind"])
        #expect(found.first?.message.contains(#"did you mean "dataset"?"#) == true)
    }

    @Test("a bad data class names the field and lists the classes")
    func badClass() throws {
        let found = try errors(#"{"kind": "dataset", "name": "d", "steward": "uon", "class": "secret"}"#)
        #expect(found.map(\.field) == ["class"])
        #expect(found.first?.message.contains("health") == true)
        #expect(found.first?.message.contains(#""secret""#) == true)
    }

    @Test("a bad local time names the window field", arguments: ["25:00", "24:30", "18:60", "18", "6pm", "18:5"])
    func badTime(text: String) throws {
        let found = try errors(
            #"{"kind": "donor-policy", "name": "uon", "permit": [{"windows": [{"from": "\#(text)", "to": "06:00"}]}]}"#)
        #expect(found.map(\.field) == ["permit[0].windows[0].from"])
        #expect(found.first?.message.contains(#"got "\#(text)""#) == true)
    }

    @Test("24:00 closes a window at midnight")
    func midnight() throws {
        let document = try Fixture.document(
            #"{"kind": "donor-policy", "name": "uon", "permit": [{"windows": [{"days": ["sat", "sun"], "from": "00:00", "to": "24:00"}]}]}"#)
        guard case .donorPolicy(let policy) = document.body else {
            Issue.record("not a donor policy")
            return
        }
        #expect(policy.permit.first?.windows == [TimeWindow(days: [.sat, .sun], fromMinute: 0, toMinute: 24 * 60)])
        #expect(policy.permit.first?.id == "permit-1")
    }

    @Test("a bad time zone names the field and suggests the closest IANA name")
    func badTimeZone() throws {
        let found = try errors(#"{"kind": "donor-policy", "name": "uon", "timezone": "Africa/Nairobbi"}"#)
        #expect(found.map(\.field) == ["timezone"])
        #expect(found.first?.message.contains(#"did you mean "Africa/Nairobi"?"#) == true)
    }

    @Test("every problem of a document is reported, each with its field")
    func everyProblem() throws {
        let found = try errors(
            """
            {"kind": "dataset", "name": "d", "steward": "uon", "class": "secret", "export_class": "ctrl",
             "residency": {"allow": [], "deny": ["ke"]}, "use": {"kinds": ["batch"]}, "effective_from": "tomorrow"}
            """)
        #expect(
            Set(found.map(\.field)) == [
                "class", "export_class", "residency.allow", "residency.deny[0]", "use.kinds[0]", "effective_from",
            ])
    }

    @Test("jurisdiction sets: upper-case names, conditional members, and every bad member named")
    func jurisdictionSets() throws {
        let document = try Fixture.document(
            """
            {"kind": "jurisdiction-set", "name": "GDPR_ADEQUATE",
             "members": ["EEA", "CH", {"jurisdiction": "US", "when": {"label": "dpf_certified", "equals": "true"}}, {"set": "OTHER"}]}
            """)
        #expect(
            document.body
                == .jurisdictionSet(
                    JurisdictionSetRule(members: [
                        SetMember("EEA"), SetMember("CH"),
                        SetMember("US", when: LabelCondition(label: "dpf_certified", equals: "true")), SetMember("OTHER"),
                    ])))

        let lowerName = try errors(#"{"kind": "jurisdiction-set", "name": "eea", "members": ["DE"]}"#)
        #expect(lowerName.map(\.field) == ["name"])

        let bad = try errors(
            """
            {"kind": "jurisdiction-set", "name": "BAD",
             "members": [{"jurisdiction": "US", "when": {"label": "dpf"}}, {"jurisdiction": "US", "set": "EEA"}, 7, "ke"]}
            """)
        #expect(Set(bad.map(\.field)) == ["members[0].when.equals", "members[1].jurisdiction", "members[2]", "members[3]"])

        let empty = try errors(#"{"kind": "jurisdiction-set", "name": "NONE", "members": []}"#)
        #expect(empty.map(\.field) == ["members"])
    }

    @Test("lineage: a relaxation needs who and why")
    func relaxationNeedsAttestation() throws {
        let found = try errors(
            #"{"kind": "dataset", "name": "m", "steward": "uon", "derived_from": [{"source": "ke-health", "relaxed": {"by": "uon"}}]}"#)
        #expect(found.map(\.field) == ["derived_from[0].relaxed.attestation"])
    }

    @Test("donor policies: forbids take no windows, rule ids are unique, grace is a duration")
    func donorShape() throws {
        let windowsOnForbid = try errors(
            #"{"kind": "donor-policy", "name": "uon", "forbid": [{"partners": ["acme"], "windows": []}]}"#)
        #expect(windowsOnForbid.map(\.field) == ["forbid[0].windows"])

        let duplicate = try errors(
            #"{"kind": "donor-policy", "name": "uon", "permit": [{"id": "x"}], "forbid": [{"id": "x", "kinds": ["training"]}]}"#)
        #expect(duplicate.count == 1)
        #expect(duplicate.first?.message.contains(#""x" is used twice"#) == true)

        let grace = try errors(#"{"kind": "donor-policy", "name": "uon", "grace": "soon"}"#)
        #expect(grace.map(\.field) == ["grace"])
        let parsed = try Fixture.document(#"{"kind": "donor-policy", "name": "uon", "grace": "5m"}"#)
        guard case .donorPolicy(let policy) = parsed.body else {
            Issue.record("not a donor policy")
            return
        }
        #expect(policy.graceSeconds == 300)
        #expect(policy.timezone == "UTC")
    }

    @Test("a federation forbid must say what it forbids")
    func federationForbidNeedsScope() throws {
        let found = try errors(#"{"kind": "federation", "name": "guardrails", "forbid": [{"id": "all"}]}"#)
        #expect(found.map(\.field) == ["forbid[0].partners"])
        let classes = try errors(#"{"kind": "federation", "name": "guardrails", "export_classes": {"ctrl-a": ["EU"]}}"#)
        #expect(classes.map(\.field) == ["export_classes.ctrl-a"])
    }
}

@Suite("Sovereignty rule documents: references are checked at write time")
struct SovereigntyReferenceTests {
    let snapshot: PolicySnapshot

    init() throws {
        snapshot = try Fixture.snapshot([
            #"{"kind": "jurisdiction-set", "name": "EEA", "members": ["EU", "NO"]}"#,
            Fixture.dataset("ke-health", extra: #""residency": {"allow": ["KE"]}"#),
            #"{"kind": "federation", "name": "export", "export_classes": {"CTRL-A": ["EEA"]}}"#,
        ])
    }

    func referenceErrors(_ text: String) throws -> [FieldError] {
        snapshot.referenceErrors(try Fixture.document(text))
    }

    @Test("an unknown jurisdiction suggests the closest code: KEN → KE")
    func unknownJurisdiction() throws {
        let found = try referenceErrors(Fixture.dataset("d", extra: #""residency": {"allow": ["KEN"], "deny": ["EEEA"]}"#))
        #expect(
            found == [
                FieldError(field: "residency.allow[0]", message: "unknown jurisdiction or set KEN; did you mean KE?"),
                FieldError(field: "residency.deny[0]", message: "unknown jurisdiction or set EEEA; did you mean EEA?"),
            ])
    }

    @Test("unknown partners and projects are named, with suggestions")
    func unknownPartner() throws {
        let dataset = try referenceErrors(
            Fixture.dataset(
                "d", steward: "uonn", extra: #""residency": {"partners": ["tumm"]}, "use": {"projects": ["asrr"], "partners": ["zzzzzz"]}"#))
        #expect(
            dataset == [
                FieldError(field: "steward", message: "unknown partner uonn; did you mean uon?"),
                FieldError(field: "residency.partners[0]", message: "unknown partner tumm; did you mean tum?"),
                FieldError(field: "use.partners[0]", message: "unknown partner zzzzzz"),
                FieldError(field: "use.projects[0]", message: "unknown project asrr; did you mean asr?"),
            ])
        let donor = try referenceErrors(#"{"kind": "donor-policy", "name": "uon", "permit": [{"partners": ["inri"]}]}"#)
        #expect(donor == [FieldError(field: "permit[0].partners[0]", message: "unknown partner inri; did you mean inria?")])
        let owner = try referenceErrors(#"{"kind": "donor-policy", "name": "nobody"}"#)
        #expect(owner.map(\.field) == ["name"])
        let federation = try referenceErrors(
            #"{"kind": "federation", "name": "g", "forbid": [{"projects": ["adz"], "jurisdictions": ["USA"]}]}"#)
        #expect(federation.map(\.field) == ["forbid[0].projects[0]", "forbid[0].jurisdictions[0]"])
    }

    @Test("a set may name sets, but not itself, directly or through others")
    func setCycles() throws {
        #expect(try referenceErrors(#"{"kind": "jurisdiction-set", "name": "ADEQUATE", "members": ["EEA", "CH", "JP"]}"#) == [])

        let direct = try referenceErrors(#"{"kind": "jurisdiction-set", "name": "LOOP", "members": ["DE", "LOOP"]}"#)
        #expect(direct.map(\.field) == ["members"])
        #expect(direct.first?.message.contains("contains itself") == true)

        // EEA already exists; redefining it to include a set that includes EEA closes a loop.
        let withOuter = try Fixture.snapshot([
            #"{"kind": "jurisdiction-set", "name": "EEA", "members": ["EU", "NO"]}"#,
            #"{"kind": "jurisdiction-set", "name": "ADEQUATE", "members": ["EEA", "CH"]}"#,
        ])
        let loop = withOuter.referenceErrors(
            try Fixture.document(#"{"kind": "jurisdiction-set", "name": "EEA", "members": ["EU", "NO", "ADEQUATE"]}"#))
        #expect(loop.map(\.field) == ["members"])
        // Reported from the first set of the loop by name, the same in every process.
        #expect(loop.first?.message == "jurisdiction set ADEQUATE contains itself (ADEQUATE → EEA → ADEQUATE)")

        let named = try referenceErrors(#"{"kind": "jurisdiction-set", "name": "KE", "members": ["UG"]}"#)
        #expect(named.map(\.field) == ["name"])
    }

    @Test("lineage and export classes must name what exists")
    func lineageAndExport() throws {
        let found = try referenceErrors(
            Fixture.dataset("model", extra: #""export_class": "CTRL-B", "derived_from": ["ke-helth", "model"]"#))
        #expect(
            found == [
                FieldError(field: "export_class", message: "unknown export class CTRL-B; did you mean CTRL-A?"),
                FieldError(field: "derived_from[0].source", message: "unknown dataset ke-helth; did you mean ke-health?"),
                FieldError(field: "derived_from[1].source", message: "unknown dataset model"),
                FieldError(field: "derived_from[1].source", message: "a dataset cannot be derived from itself"),
            ])
        #expect(try referenceErrors(Fixture.dataset("model", extra: #""export_class": "CTRL-A", "derived_from": ["ke-health"]"#)) == [])
    }
}
