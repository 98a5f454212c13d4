import ComityCore
import Foundation
import Testing

@Suite("Sovereignty evaluation: donor policies")
struct DonorPolicyTests {
    let now = Fixture.noon
    let uonHost = Fixture.host(1, "uon", "KE")
    let acmeHost = Fixture.host(2, "acme", "US")

    func snapshot(_ uonPolicy: String) throws -> PolicySnapshot {
        try Fixture.snapshot([Fixture.dataset("health", extra: #""class": "health""#), uonPolicy])
    }

    @Test("a partner's own jobs are never guests on its own hosts, whatever its policy says")
    func ownHost() throws {
        let snapshot = try snapshot(#"{"kind": "donor-policy", "name": "uon", "forbid": [{"id": "nobody", "partners": ["uon"]}]}"#)
        let own = snapshot.evaluate(Fixture.job("asr"), on: uonHost, at: now)
        #expect(own.eligible)
        #expect(own.admittedBy.contains { $0.code == .ownHost })
        // acme published nothing: still its own hosts take its own jobs.
        #expect(snapshot.evaluate(Fixture.job("ads"), on: acmeHost, at: now).eligible)
    }

    @Test("a partner that published no donation policy takes no guests")
    func noPolicy() throws {
        let snapshot = try snapshot(Fixture.openDonor("uon"))
        let guest = snapshot.evaluate(Fixture.job("asr"), on: acmeHost, at: now)
        #expect(guest.codes == [.donorNoPolicy])
        #expect(guest.failures.first?.category == .donor)
        #expect(guest.failures.first?.stopsAtOnce == false)
    }

    @Test("permits by partner, project, kind and class; default deny")
    func permits() throws {
        let snapshot = try snapshot(
            """
            {"kind": "donor-policy", "name": "uon", "permit": [
              {"id": "tum", "partners": ["tum"]},
              {"id": "malaria", "projects": ["malaria"], "kinds": ["inference"]},
              {"id": "health", "classes": ["health"]}]}
            """)
        func eligible(_ project: String, kind: JobKind = .training, inputs: [String] = []) -> Bool {
            snapshot.evaluate(Fixture.job(project, inputs: inputs, kind: kind), on: uonHost, at: now).eligible
        }
        #expect(eligible("vision"))
        #expect(eligible("malaria", kind: .inference))
        #expect(!eligible("malaria"))
        #expect(eligible("malaria", inputs: ["health"]))
        #expect(!eligible("imaging"))
        let refused = snapshot.evaluate(Fixture.job("imaging"), on: uonHost, at: now)
        #expect(refused.codes == [.donorNoPermit])
        #expect(refused.failures.first?.rule == "donor-policy/uon@v1")
        let admitted = snapshot.evaluate(Fixture.job("vision"), on: uonHost, at: now)
        #expect(admitted.admittedBy.contains { $0.code == .donorPermit && $0.subject == "uon#tum" })
    }

    @Test("a forbid beats any permit")
    func denyOverrides() throws {
        let snapshot = try snapshot(
            """
            {"kind": "donor-policy", "name": "uon",
             "permit": [{"id": "all"}, {"id": "tum", "partners": ["tum"]}],
             "forbid": [{"id": "no-vision", "projects": ["vision"]}, {"id": "no-health", "classes": ["health"]}]}
            """)
        let vision = snapshot.evaluate(Fixture.job("vision"), on: uonHost, at: now)
        #expect(vision.failures.map(\.label) == ["DONOR_FORBID(uon#no-vision)"])
        let both = snapshot.evaluate(Fixture.job("vision", inputs: ["health"]), on: uonHost, at: now)
        #expect(both.failures.map(\.label) == ["DONOR_FORBID(uon#no-vision)", "DONOR_FORBID(uon#no-health)"])
        #expect(snapshot.evaluate(Fixture.job("malaria"), on: uonHost, at: now).eligible)
    }

    @Test("rule order never matters: shuffled permits and forbids give the same verdicts")
    func orderDoesNotMatter() throws {
        let permits = [
            #"{"id": "tum", "partners": ["tum"]}"#,
            #"{"id": "serving", "kinds": ["inference"]}"#,
            #"{"id": "evenings", "projects": ["malaria"], "windows": [{"from": "18:00", "to": "06:00"}]}"#,
            #"{"id": "fits", "partners": ["inria"], "windows": [{"from": "10:00", "to": "14:00"}], "must_finish_within_window": true}"#,
            #"{"id": "health", "classes": ["health"]}"#,
        ]
        let forbids = [
            #"{"id": "no-acme", "partners": ["acme"]}"#,
            #"{"id": "no-imaging-training", "projects": ["imaging"], "kinds": ["training"]}"#,
            #"{"id": "no-health-vision", "projects": ["vision"], "classes": ["health"]}"#,
        ]
        func policy(_ permits: [String], _ forbids: [String]) -> String {
            #"{"kind": "donor-policy", "name": "uon", "permit": [\#(permits.joined(separator: ", "))], "forbid": [\#(forbids.joined(separator: ", "))]}"#
        }
        var jobs: [JobFacts] = []
        for project in ["vision", "malaria", "imaging", "ads", "crops"] {
            for kind in JobKind.allCases {
                for inputs in [[], ["health"]] {
                    for runtime: Int64 in [600, 4 * 3600] { jobs.append(Fixture.job(project, inputs: inputs, kind: kind, runtime: runtime)) }
                }
            }
        }
        let times = [now, Fixture.time("2026-06-10T20:00:00Z"), Fixture.time("2026-06-10T09:30:00Z")]
        func verdicts(_ snapshot: PolicySnapshot) -> [[Set<String>]] {
            times.map { time in jobs.map { Set(snapshot.evaluate($0, on: uonHost, at: time).failures.map(\.label)) } }
        }
        let baseline = verdicts(try snapshot(policy(permits, forbids)))
        // Both outcomes occur, or the comparison proves little.
        #expect(baseline.joined().contains { $0.isEmpty })
        #expect(baseline.joined().contains { !$0.isEmpty })
        var rng = SplitMix64(seed: 7)
        for round in 0..<20 {
            let shuffled = try snapshot(policy(permits.shuffled(using: &rng), forbids.shuffled(using: &rng)))
            #expect(verdicts(shuffled) == baseline, "round \(round)")
        }
    }
}

@Suite("Sovereignty evaluation: federation guardrails and host state")
struct FederationRuleTests {
    let now = Fixture.noon
    let snapshot: PolicySnapshot

    init() throws {
        snapshot = try Fixture.snapshot([
            #"{"kind": "jurisdiction-set", "name": "EEA", "members": ["EU", "NO"]}"#,
            Fixture.dataset("health", extra: #""class": "health""#),
            Fixture.dataset("ke-only", extra: #""residency": {"allow": ["KE"]}"#),
            """
            {"kind": "federation", "name": "guardrails", "forbid": [
              {"id": "suspended", "partners": ["acme"]},
              {"id": "health-not-us", "classes": ["health"], "jurisdictions": ["US"]},
              {"id": "no-serving-eea", "kinds": ["inference"], "jurisdictions": ["EEA"]}]}
            """,
            Fixture.openDonor("mak"), Fixture.openDonor("tum"),
        ])
    }

    @Test("a forbid without jurisdictions rejects the job at submission, with that reason alone")
    func forbidEverywhere() {
        let job = Fixture.job("ads")
        let reasons = snapshot.active(at: now).jobReasons(job)
        #expect(reasons.map(\.label) == ["E_FEDERATION_FORBID(guardrails#suspended)"])
        #expect(reasons.first?.category == .job)
        #expect(snapshot.active(at: now).permitted(job) == .only([]))
        #expect(snapshot.evaluate(job, on: Fixture.host(1, "acme", "US"), at: now).codes == [.federationForbidJob])
    }

    @Test("a forbid with jurisdictions excludes hosts there, and only those")
    func forbidSomewhere() {
        let health = Fixture.job("asr", inputs: ["health"])
        #expect(snapshot.active(at: now).jobReasons(health) == [])
        let us = snapshot.evaluate(health, on: Fixture.host(1, "mak", "US"), at: now)
        #expect(us.failures.map(\.label) == ["FEDERATION_FORBID(guardrails#health-not-us)"])
        #expect(us.failures.first?.category == .federation)
        #expect(snapshot.evaluate(health, on: Fixture.host(2, "mak", "UG"), at: now).eligible)
        #expect(snapshot.evaluate(Fixture.job("asr"), on: Fixture.host(1, "mak", "US"), at: now).eligible)

        let serving = Fixture.job("asr", kind: .inference)
        #expect(snapshot.evaluate(serving, on: Fixture.host(3, "tum", "DE-BY"), at: now).codes == [.federationForbid])
        #expect(snapshot.evaluate(serving, on: Fixture.host(4, "mak", "NO"), at: now).codes == [.federationForbid])
        #expect(snapshot.active(at: now).permitted(serving).codes == ["CH", "JP", "KE", "UG", "US"])
    }

    @Test("a forbid that leaves nowhere for the data rejects the job at submission")
    func forbidLeavesNothing() throws {
        let snapshot = try Fixture.snapshot([
            Fixture.dataset("us-health", extra: #""class": "health", "residency": {"allow": ["US"]}"#),
            #"{"kind": "federation", "name": "guardrails", "forbid": [{"id": "health-not-us", "classes": ["health"], "jurisdictions": ["US"]}]}"#,
        ])
        #expect(snapshot.active(at: now).jobReasons(Fixture.job("asr", inputs: ["us-health"])).map(\.code) == [.residencyEmpty])
    }

    @Test("hosts that are down or draining are excluded, with every other reason still listed")
    func hostState() {
        let job = Fixture.job("asr", inputs: ["ke-only"])
        #expect(snapshot.evaluate(job, on: Fixture.host(1, "uon", "KE", condition: .down), at: now).codes == [.hostDown])
        #expect(snapshot.evaluate(job, on: Fixture.host(1, "uon", "KE", condition: .draining), at: now).codes == [.hostDraining])
        #expect(snapshot.evaluate(job, on: Fixture.host(2, "tum", "DE", condition: .down), at: now).codes == [.hostDown, .residency])
    }
}

@Suite("Sovereignty evaluation: announced versions (POLICY_FUTURE_CONFLICT)")
struct FutureVersionTests {
    let now = Fixture.noon
    let germany = Fixture.host(1, "tum", "DE")
    let kenya = Fixture.host(2, "uon", "KE")

    func snapshot(effective: String) throws -> PolicySnapshot {
        try Fixture.snapshot([
            Fixture.dataset("d", extra: #""residency": {"allow": ["EU", "KE"]}"#),
            Fixture.dataset("d", extra: #""residency": {"allow": ["KE"]}, "effective_from": "\#(effective)""#),
            Fixture.openDonor("tum"),
        ])
    }

    @Test("a version taking effect before max_runtime ends excludes hosts it would forbid")
    func conflict() throws {
        let snapshot = try snapshot(effective: "2026-06-10T12:30:00Z")
        let verdict = snapshot.evaluate(Fixture.job("asr", inputs: ["d"], runtime: 3600), on: germany, at: now)
        #expect(verdict.codes == [.policyFutureConflict])
        let reason = try #require(verdict.failures.first)
        #expect(reason.rule == "dataset/d@v2")
        #expect(reason.category == .policy)
        #expect(reason.detail.contains("RESIDENCY(d)"))
        #expect(reason.detail.contains("2026-06-10T12:30:00Z"))
        // Today's rules alone admit it; a host the new version keeps is fine.
        #expect(snapshot.active(at: now).evaluate(Fixture.job("asr", inputs: ["d"]), on: germany, at: now).eligible)
        #expect(snapshot.evaluate(Fixture.job("asr", inputs: ["d"], runtime: 3600), on: kenya, at: now).eligible)
    }

    @Test("a version taking effect after max_runtime does not matter yet", arguments: [1200, 1799] as [Int64])
    func noConflict(runtime: Int64) throws {
        let snapshot = try snapshot(effective: "2026-06-10T12:30:00Z")
        #expect(snapshot.evaluate(Fixture.job("asr", inputs: ["d"], runtime: runtime), on: germany, at: now).eligible)
    }

    @Test("once in force, the new version is the rule, and the old one is history")
    func inForce() throws {
        let snapshot = try snapshot(effective: "2026-06-10T12:30:00Z")
        let later = Fixture.time("2026-06-10T12:30:00Z")
        #expect(snapshot.evaluate(Fixture.job("asr", inputs: ["d"]), on: germany, at: later).codes == [.residency])
        #expect(snapshot.evaluate(Fixture.job("asr", inputs: ["d"]), on: germany, at: later).failures.first?.rule == "dataset/d@v2")
        #expect(snapshot.changes(after: now, until: later) == [later])
    }

    @Test("an announced donor policy that drops a guest's permit conflicts too")
    func donorConflict() throws {
        let snapshot = try Fixture.snapshot([
            Fixture.openDonor("tum"),
            #"{"kind": "donor-policy", "name": "tum", "effective_from": "2026-06-10T14:00:00Z", "permit": [{"partners": ["inria"]}]}"#,
        ])
        #expect(snapshot.evaluate(Fixture.job("asr", runtime: 3 * 3600), on: germany, at: now).codes == [.policyFutureConflict])
        #expect(snapshot.evaluate(Fixture.job("asr", runtime: 3600), on: germany, at: now).eligible)
        #expect(snapshot.evaluate(Fixture.job("imaging", runtime: 3 * 3600), on: germany, at: now).eligible)
    }
}
