import ComityCore
import Foundation
import Testing

/// Data rules: residency (allow, deny, partners, host labels), jurisdiction containment and sets, conditional
/// members, intersections, use conditions, lineage and export classes.
@Suite("Sovereignty evaluation: data rules")
struct SovereigntyEvaluationTests {
    let snapshot: PolicySnapshot
    let now = Fixture.noon

    // Hosts, one per place; every partner but acme takes any guest, so only data rules decide here.
    let ke = Fixture.host(1, "uon", "KE")
    let de = Fixture.host(2, "tum", "DE")
    let fr = Fixture.host(3, "inria", "FR")
    let euLevel = Fixture.host(4, "tum", "EU")
    let bavaria = Fixture.host(5, "tum", "DE-BY")
    let norway = Fixture.host(6, "mak", "NO")
    let japan = Fixture.host(7, "mak", "JP")
    let usCertified = Fixture.host(8, "mak", "US", labels: ["dpf_certified": "true"])
    let usUncertified = Fixture.host(9, "mak", "US", labels: ["dpf_certified": "false"])
    let usUnlabelled = Fixture.host(10, "mak", "US")

    init() throws {
        snapshot = try Fixture.snapshot([
            #"{"kind": "jurisdiction-set", "name": "EEA", "members": ["EU", "NO"]}"#,
            """
            {"kind": "jurisdiction-set", "name": "ADEQUATE",
             "members": ["EEA", "CH", "JP", {"jurisdiction": "US", "when": {"label": "dpf_certified", "equals": "true"}}]}
            """,
            Fixture.dataset("ke-health", extra: #""class": "health", "residency": {"allow": ["KE"]}"#),
            Fixture.dataset("eu-wide", steward: "tum", extra: #""residency": {"allow": ["EU"]}"#),
            Fixture.dataset("de-only", steward: "tum", extra: #""residency": {"allow": ["DE"]}"#),
            Fixture.dataset("de-ke", steward: "tum", extra: #""residency": {"allow": ["DE", "KE"]}"#),
            Fixture.dataset("not-eu", steward: "mak", extra: #""residency": {"deny": ["EU"]}"#),
            Fixture.dataset("not-adequate", steward: "mak", extra: #""residency": {"deny": ["ADEQUATE"]}"#),
            Fixture.dataset("eu-personal", steward: "tum", extra: #""class": "personal", "residency": {"allow": ["ADEQUATE"]}"#),
            Fixture.dataset("uon-hosts", extra: #""residency": {"partners": ["uon"]}"#),
            Fixture.dataset("tre-only", extra: #""residency": {"host_labels": {"tre": "true"}}"#),
            Fixture.dataset("open"),
            Fixture.openDonor("uon"), Fixture.openDonor("tum"), Fixture.openDonor("inria"), Fixture.openDonor("mak"),
        ])
    }

    func verdict(_ inputs: [String], on host: HostFacts, project: String = "malaria") -> Verdict {
        snapshot.evaluate(Fixture.job(project, inputs: inputs), on: host, at: now)
    }

    @Test("allow: a KE-only dataset runs in KE and nowhere else, with the rule named")
    func residencyAllow() {
        let home = verdict(["ke-health"], on: ke)
        #expect(home.eligible)
        #expect(home.admittedBy.contains { $0.code == .residencyOK && $0.rule == "dataset/ke-health@v1" })

        let away = verdict(["ke-health"], on: de)
        #expect(away.codes == [.residency])
        let reason = away.failures[0]
        #expect(reason.subject == "ke-health")
        #expect(reason.rule == "dataset/ke-health@v1")
        #expect(reason.category == .data)
        #expect(reason.brief == "KE only")
        #expect(reason.stopsAtOnce)
        #expect(reason.detail.contains("host jurisdiction DE not in KE"))
    }

    @Test("containment: allowing EU admits hosts in DE, FR, DE-BY and EU itself")
    func containmentDown() {
        for host in [de, fr, bavaria, euLevel] { #expect(verdict(["eu-wide"], on: host).eligible, "\(host.jurisdiction)") }
        for host in [ke, norway, usCertified] { #expect(verdict(["eu-wide"], on: host).codes == [.residency], "\(host.jurisdiction)") }
    }

    @Test("containment: allowing DE admits DE and DE-BY, not an EU-level host nor FR")
    func containmentNotUp() {
        #expect(verdict(["de-only"], on: de).eligible)
        #expect(verdict(["de-only"], on: bavaria).eligible)
        #expect(verdict(["de-only"], on: euLevel).codes == [.residency])
        #expect(verdict(["de-only"], on: fr).codes == [.residency])
    }

    @Test("deny: denying EU excludes everything EU contains")
    func residencyDeny() {
        for host in [de, fr, bavaria, euLevel] {
            let found = verdict(["not-eu"], on: host)
            #expect(found.codes == [.residency], "\(host.jurisdiction)")
            #expect(found.failures.first?.brief == "not EU")
        }
        #expect(verdict(["not-eu"], on: ke).eligible)
        #expect(verdict(["not-eu"], on: norway).eligible)
    }

    @Test("partners: only the listed partners' hosts")
    func residencyPartners() {
        #expect(verdict(["uon-hosts"], on: ke).eligible)
        let other = verdict(["uon-hosts"], on: de)
        #expect(other.codes == [.residency])
        #expect(other.failures.first?.brief == "hosts of uon only")
    }

    @Test("host labels: the label must be there with the value")
    func hostLabels() {
        #expect(verdict(["tre-only"], on: Fixture.host(11, "tum", "DE", labels: ["tre": "true"])).eligible)
        #expect(verdict(["tre-only"], on: Fixture.host(12, "tum", "DE", labels: ["tre": "false"])).codes == [.labelRequired])
        let missing = verdict(["tre-only"], on: de)
        #expect(missing.codes == [.labelRequired])
        #expect(missing.failures.first?.detail.contains("has none") == true)
    }

    @Test("sets of sets: ADEQUATE = EEA + CH + JP + conditional US, EEA = EU + NO")
    func setsOfSets() {
        for host in [fr, bavaria, norway, japan, usCertified] {
            #expect(verdict(["eu-personal"], on: host).eligible, "\(host.name)")
        }
        #expect(verdict(["eu-personal"], on: ke).codes == [.residency])
    }

    @Test("conditional member: admitted with the label, excluded when false, EVAL_ERROR when the label is missing")
    func conditionalMembers() {
        #expect(verdict(["eu-personal"], on: usCertified).eligible)
        #expect(verdict(["eu-personal"], on: usUncertified).codes == [.residency])
        let unknown = verdict(["eu-personal"], on: usUnlabelled)
        #expect(unknown.codes == [.evalError])
        #expect(unknown.failures.first?.category == .evaluation)
        #expect(unknown.failures.first?.detail.contains("dpf_certified") == true)
        #expect(unknown.failures.first?.detail.contains("fail closed") == true)
    }

    @Test("conditional member in a deny list fails closed too")
    func conditionalDeny() {
        #expect(verdict(["not-adequate"], on: usCertified).codes == [.residency])
        #expect(verdict(["not-adequate"], on: usUncertified).eligible)
        #expect(verdict(["not-adequate"], on: usUnlabelled).codes == [.evalError])
        #expect(verdict(["not-adequate"], on: ke).eligible)
    }

    @Test("a condition on a member set applies together with the inner set's own conditions")
    func nestedConditions() throws {
        let snapshot = try Fixture.snapshot([
            #"{"kind": "jurisdiction-set", "name": "DPF_US", "members": [{"jurisdiction": "US", "when": {"label": "dpf_certified", "equals": "true"}}, "CH"]}"#,
            #"{"kind": "jurisdiction-set", "name": "TRE_DPF", "members": [{"set": "DPF_US", "when": {"label": "tre", "equals": "true"}}]}"#,
            Fixture.dataset("d", extra: #""residency": {"allow": ["TRE_DPF"]}"#),
            Fixture.openDonor("mak"),
        ])
        func codes(_ labels: [String: String], in jurisdiction: String = "US") -> [Reason.Code] {
            snapshot.evaluate(Fixture.job("asr", inputs: ["d"]), on: Fixture.host(1, "mak", jurisdiction, labels: labels), at: now).codes
        }
        #expect(codes(["dpf_certified": "true", "tre": "true"]) == [])
        #expect(codes(["dpf_certified": "true", "tre": "false"]) == [.residency])
        #expect(codes(["dpf_certified": "true"]) == [.evalError])
        #expect(codes(["dpf_certified": "false", "tre": "true"]) == [.residency])
        #expect(codes(["tre": "true"]) == [.evalError])
        // CH has no condition of its own: the outer one alone applies.
        #expect(codes(["tre": "true"], in: "CH") == [])
        #expect(codes(["tre": "false"], in: "CH") == [.residency])
        #expect(codes([:], in: "CH") == [.evalError])
    }

    @Test("a set naming something that is neither a jurisdiction nor a set in force fails closed everywhere")
    func brokenSets() throws {
        let snapshot = try Fixture.snapshot([
            #"{"kind": "jurisdiction-set", "name": "BROKEN", "members": ["DE", "XX"]}"#,
            #"{"kind": "jurisdiction-set", "name": "LOOP_A", "members": ["DE", "LOOP_B"]}"#,
            #"{"kind": "jurisdiction-set", "name": "LOOP_B", "members": ["KE", "LOOP_A"]}"#,
            Fixture.dataset("broken", extra: #""residency": {"allow": ["BROKEN"]}"#),
            Fixture.dataset("loop", extra: #""residency": {"allow": ["LOOP_A"]}"#),
            Fixture.dataset("gone", extra: #""residency": {"deny": ["NOPE"]}"#),
            Fixture.openDonor("tum"),
        ])
        for input in ["broken", "loop", "gone"] {
            let job = Fixture.job("asr", inputs: [input])
            #expect(snapshot.evaluate(job, on: de, at: now).codes == [.evalError], "\(input)")
            #expect(snapshot.active(at: now).permitted(job) == .only([]), "\(input)")
        }
    }

    @Test("a cycle is explained the same way in every process (decisions are replayed byte for byte)")
    func deterministicCycleText() throws {
        // Swift seeds each process's (and each table's) hash order at random: the text must not depend on it.
        let snapshot = try Fixture.snapshot([
            #"{"kind": "jurisdiction-set", "name": "CYCLE_C", "members": ["CYCLE_A"]}"#,
            #"{"kind": "jurisdiction-set", "name": "CYCLE_B", "members": ["CYCLE_C"]}"#,
            #"{"kind": "jurisdiction-set", "name": "CYCLE_A", "members": ["DE", "CYCLE_B"]}"#,
            Fixture.dataset("d", extra: #""residency": {"allow": ["CYCLE_B"]}"#),
        ])
        let verdict = snapshot.evaluate(Fixture.job("asr", inputs: ["d"]), on: ke, at: now)
        #expect(
            verdict.failures.map(\.detail) == [
                "jurisdiction set CYCLE_A contains itself (CYCLE_A → CYCLE_B → CYCLE_C → CYCLE_A) (fail closed)"
            ])
        #expect(verdict.failures.map(\.rule) == ["jurisdiction-set/CYCLE_A@v1"])
    }

    @Test("several datasets intersect, and every failing one is named")
    func intersections() {
        #expect(verdict(["eu-wide", "de-ke"], on: de).eligible)
        let france = verdict(["eu-wide", "de-ke"], on: fr)
        #expect(france.failures.map(\.label) == ["RESIDENCY(de-ke)"])
        let kenya = verdict(["eu-wide", "de-ke"], on: ke)
        #expect(kenya.failures.map(\.label) == ["RESIDENCY(eu-wide)"])
        let tokyo = verdict(["eu-wide", "de-ke", "not-adequate", "tre-only"], on: japan)
        // EU ∩ {DE, KE} minus ADEQUATE is empty: the job is also rejected outright.
        #expect(
            tokyo.failures.map(\.label) == [
                "E_RESIDENCY_EMPTY", "RESIDENCY(eu-wide)", "RESIDENCY(de-ke)", "RESIDENCY(not-adequate)", "LABEL_REQUIRED(tre-only)",
            ])
        #expect(snapshot.active(at: now).permitted(Fixture.job("asr", inputs: ["eu-wide", "de-ke"])) == .only(["DE", "DE-BY"]))
    }

    @Test("residencies that intersect to nothing reject the job at submission (E_RESIDENCY_EMPTY)")
    func residencyEmpty() {
        let job = Fixture.job("asr", inputs: ["ke-health", "eu-wide"])
        let active = snapshot.active(at: now)
        let reasons = active.jobReasons(job)
        #expect(reasons.map(\.code) == [.residencyEmpty])
        #expect(reasons.first?.category == .job)
        #expect(reasons.first?.detail.contains("ke-health allows KE; eu-wide allows EU") == true)
        #expect(active.permitted(job) == .only([]))
        // The host-level reasons are still all listed.
        #expect(verdict(["ke-health", "eu-wide"], on: ke).codes == [.residencyEmpty, .residency])
    }

    @Test("permitted jurisdictions: conditional members count as possible, deny removes certain members only")
    func permitted() {
        let active = snapshot.active(at: now)
        #expect(active.permitted(Fixture.job("asr", inputs: ["open"])) == .anywhere)
        #expect(active.permitted(Fixture.job("asr", inputs: [])) == .anywhere)
        #expect(
            active.permitted(Fixture.job("asr", inputs: ["eu-personal"])).codes == ["CH", "DE", "DE-BY", "EU", "FR", "JP", "NO", "US"])
        #expect(active.permitted(Fixture.job("asr", inputs: ["not-eu"])).codes == ["CH", "JP", "KE", "NO", "UG", "US"])
        #expect(active.permitted(Fixture.job("asr", inputs: ["not-adequate"])).codes == ["KE", "UG", "US"])
    }

    @Test("an unknown dataset is rejected with a suggestion; an unknown project too")
    func unknownDataset() {
        let active = snapshot.active(at: now)
        let reasons = active.jobReasons(Fixture.job("asr", inputs: ["ke-helth"]))
        #expect(reasons.map(\.code) == [.unknownDataset])
        #expect(reasons.first?.category == .job)
        #expect(reasons.first?.detail == "unknown dataset ke-helth; did you mean ke-health?")
        #expect(active.permitted(Fixture.job("asr", inputs: ["ke-helth"])) == .only([]))

        let project = active.jobReasons(Fixture.job("nope", inputs: ["open"], partner: "uon"))
        #expect(project.map(\.code) == [.unknownProject])
        #expect(verdict(["ke-helth"], on: ke).codes == [.unknownDataset])
    }
}

@Suite("Sovereignty evaluation: use conditions are job-level")
struct UseConditionTests {
    let snapshot: PolicySnapshot

    init() throws {
        snapshot = try Fixture.snapshot([
            Fixture.dataset("health", extra: #""use": {"purposes": ["health-research"]}"#),
            Fixture.dataset("free", extra: #""use": {"non_commercial": true}"#),
            Fixture.dataset("club", extra: #""use": {"partners": ["uon", "tum"]}"#),
            Fixture.dataset("asr-only", extra: #""use": {"projects": ["asr"]}"#),
            Fixture.dataset("serving", extra: #""use": {"kinds": ["inference"]}"#),
            Fixture.dataset(
                "strict",
                extra: #""use": {"purposes": ["health-research"], "non_commercial": true, "partners": ["uon"], "projects": ["asr"], "kinds": ["inference"]}"#
            ),
        ])
    }

    func reasons(_ project: String, _ input: String, kind: JobKind = .training) -> [String] {
        snapshot.active(at: Fixture.noon).jobReasons(Fixture.job(project, inputs: [input], kind: kind)).map { reason in
            #expect(reason.category == .job)
            #expect(reason.code == .useCondition)
            return reason.subject ?? ""
        }
    }

    @Test("purpose: the project's purpose must be listed; a project without one fails")
    func purpose() {
        #expect(reasons("asr", "health") == [])
        #expect(reasons("vision", "health") == ["PURPOSE,health"])
        #expect(reasons("crops", "health") == ["PURPOSE,health"])
    }

    @Test("non-commercial: neither the project nor its partner may be commercial")
    func nonCommercial() {
        #expect(reasons("asr", "free") == [])
        #expect(reasons("imaging", "free") == ["NCU,free"])
        #expect(reasons("ads", "free") == ["NCU,free"])
    }

    @Test("partners, projects and kinds")
    func lists() {
        #expect(reasons("vision", "club") == [])
        #expect(reasons("malaria", "club") == ["PARTNER,club"])
        #expect(reasons("asr", "asr-only") == [])
        #expect(reasons("malaria", "asr-only") == ["PROJECT,asr-only"])
        #expect(reasons("asr", "serving", kind: .inference) == [])
        #expect(reasons("asr", "serving") == ["KIND,serving"])
    }

    @Test("every failing condition is reported, on every host")
    func everyCondition() {
        #expect(reasons("ads", "strict") == ["PURPOSE,strict", "NCU,strict", "PARTNER,strict", "PROJECT,strict", "KIND,strict"])
        let verdict = snapshot.evaluate(Fixture.job("ads", inputs: ["strict"]), on: Fixture.host(1, "acme", "US"), at: Fixture.noon)
        #expect(verdict.codes == Array(repeating: .useCondition, count: 5))
    }
}

@Suite("Sovereignty evaluation: lineage and export control")
struct LineageAndExportTests {
    let snapshot: PolicySnapshot
    let now = Fixture.noon
    let kenya = Fixture.host(1, "mak", "KE")
    let germany = Fixture.host(2, "tum", "DE")

    init() throws {
        snapshot = try Fixture.snapshot([
            #"{"kind": "jurisdiction-set", "name": "EEA", "members": ["EU", "NO"]}"#,
            Fixture.dataset(
                "ke-health", extra: #""class": "health", "residency": {"allow": ["KE"]}, "use": {"purposes": ["health-research"]}"#),
            Fixture.dataset("ke-asr-model", extra: #""derived_from": ["ke-health"]"#),
            Fixture.dataset("ke-asr-tuned", steward: "mak", extra: #""derived_from": ["ke-asr-model"]"#),
            Fixture.dataset(
                "ke-stats",
                extra: #""derived_from": [{"source": "ke-health", "relaxed": {"by": "uon", "attestation": "k-anonymity report 2026-04"}}]"#),
            Fixture.dataset("orphan", extra: #""derived_from": ["deleted-corpus"]"#),
            Fixture.dataset("llm", steward: "tum", extra: #""export_class": "CTRL-A""#),
            Fixture.dataset("llm-ft", steward: "tum", extra: #""derived_from": ["llm"]"#),
            Fixture.dataset("secret-llm", steward: "tum", extra: #""export_class": "CTRL-Z""#),
            #"{"kind": "federation", "name": "export", "export_classes": {"CTRL-A": ["EEA"]}}"#,
            #"{"kind": "donor-policy", "name": "mak", "permit": [{"id": "all"}], "forbid": [{"id": "no-health", "classes": ["health"]}]}"#,
            Fixture.openDonor("tum"),
        ])
    }

    func verdict(_ input: String, on host: HostFacts, project: String = "asr") -> Verdict {
        snapshot.evaluate(Fixture.job(project, inputs: [input]), on: host, at: now)
    }

    @Test("a model derived from Kenyan health data is bound to Kenya, through every generation")
    func inheritsResidency() {
        let model = verdict("ke-asr-model", on: germany)
        #expect(model.failures.map(\.label) == ["RESIDENCY(ke-asr-model←ke-health)"])
        #expect(model.failures.first?.detail.contains("inherited from ke-health") == true)
        #expect(model.failures.first?.rule == "dataset/ke-health@v1")
        #expect(verdict("ke-asr-tuned", on: germany).failures.map(\.label) == ["RESIDENCY(ke-asr-tuned←ke-health)"])
        #expect(snapshot.active(at: now).permitted(Fixture.job("asr", inputs: ["ke-asr-tuned"])) == .only(["KE"]))
    }

    @Test("use conditions and the strictest class are inherited too")
    func inheritsUseAndClass() {
        #expect(
            snapshot.active(at: now).jobReasons(Fixture.job("vision", inputs: ["ke-asr-model"])).map(\.subject)
                == ["PURPOSE,ke-asr-model←ke-health"])
        // mak forbids health-class guests: the model is health data by descent.
        #expect(verdict("ke-asr-model", on: kenya).codes == [.donorForbid])
        #expect(verdict("ke-asr-model", on: Fixture.host(3, "uon", "KE")).eligible)
    }

    @Test("a relaxation by the source's steward lifts the inherited rules")
    func relaxed() {
        #expect(verdict("ke-stats", on: germany).eligible)
        #expect(verdict("ke-stats", on: kenya).eligible)
        #expect(snapshot.active(at: now).jobReasons(Fixture.job("vision", inputs: ["ke-stats"])) == [])
    }

    @Test("a source that is not in force cannot be evaluated: fail closed")
    func missingSource() {
        let reasons = snapshot.active(at: now).jobReasons(Fixture.job("asr", inputs: ["orphan"]))
        #expect(reasons.map(\.code) == [.evalError])
        #expect(reasons.first?.category == .evaluation)
        #expect(verdict("orphan", on: germany).codes.contains(.evalError))
        #expect(snapshot.active(at: now).permitted(Fixture.job("asr", inputs: ["orphan"])) == .only([]))
    }

    @Test("export classes: weights load only where the class allows, inherited by fine-tunes")
    func exportControl() {
        let home = verdict("llm", on: germany, project: "vision")
        #expect(home.eligible)
        #expect(home.admittedBy.contains { $0.code == .exportOK })
        let away = verdict("llm", on: kenya, project: "vision")
        #expect(away.codes == [.exportControl])
        #expect(away.failures.first?.category == .data)
        #expect(verdict("llm-ft", on: kenya, project: "vision").failures.map(\.label) == ["EXPORT_CONTROL(llm-ft←llm)"])
        #expect(verdict("llm-ft", on: germany, project: "vision").eligible)
    }

    @Test("an export class no federation policy defines fails closed on every host")
    func undefinedExportClass() {
        for host in [germany, kenya] {
            let found = verdict("secret-llm", on: host, project: "vision")
            #expect(found.codes == [.evalError])
            #expect(found.failures.first?.detail.contains("CTRL-Z") == true)
        }
        #expect(snapshot.active(at: now).permitted(Fixture.job("vision", inputs: ["secret-llm"])) == .only([]))
    }
}
