import ComityCore
import Foundation
import Testing

/// Issue 7's run-time rules: data that is not public goes only to hosts that sandbox their jobs (`SANDBOX_REQUIRED`),
/// and a job that asks for the network may not read such data unless its rule allows it (`E_NETWORK`).
@Suite("Sovereignty: sandbox and network")
struct SovereigntySandboxTests {
    let snapshot: PolicySnapshot
    let now = Fixture.noon

    let sandboxed = Fixture.host(1, "uon", "KE", runner: .sandbox)
    let plain = Fixture.host(2, "uon", "KE", runner: .process)
    let slurm = Fixture.host(3, "uon", "KE", runner: .slurm)

    init() throws {
        snapshot = try Fixture.snapshot([
            Fixture.dataset("ke-health", extra: #""class": "health", "residency": {"allow": ["KE"]}"#),
            Fixture.dataset("ke-internal", extra: #""class": "internal""#),
            Fixture.dataset("ke-open", extra: #""network": "allow", "class": "personal""#),
            Fixture.dataset("ke-open-bool", extra: #""network": true, "class": "personal""#),
            Fixture.dataset("ke-closed", extra: #""network": "deny", "class": "personal""#),
            Fixture.dataset("open-data"),
            Fixture.dataset("open-denied", extra: #""network": "deny""#),
            Fixture.dataset("summary", extra: #""derived_from": ["ke-health"]"#),
            Fixture.dataset(
                "anonymised",
                extra: #""derived_from": [{"source": "ke-health", "relaxed": {"by": "uon", "attestation": "k-anonymity report"}}]"#),
            Fixture.openDonor("uon"),
        ])
    }

    func verdict(_ inputs: [String], on host: HostFacts, network: Bool = false) -> Verdict {
        snapshot.evaluate(Fixture.job("asr", inputs: inputs, network: network), on: host, at: now)
    }

    @Test("non-public data runs only on sandbox hosts, with the dataset, its class and the host's runner named")
    func sandboxRequired() throws {
        #expect(verdict(["ke-health"], on: sandboxed).eligible)
        for host in [plain, slurm] {
            let refused = verdict(["ke-health"], on: host)
            #expect(refused.codes == [.sandboxRequired])
            let reason = try #require(refused.failures.first)
            #expect(reason.subject == "ke-health")
            #expect(reason.rule == "dataset/ke-health@v1")
            #expect(reason.category == .data)
            #expect(reason.stopsAtOnce)
            #expect(reason.detail.contains("health data"))
            #expect(reason.detail.contains("\(host.name) runs them with the \(host.runner.rawValue) runner"))
            #expect(reason.summaryLabel == "SANDBOX_REQUIRED(ke-health: sandbox hosts only)")
        }
        // Every class above public, and only those.
        #expect(verdict(["ke-internal"], on: plain).codes == [.sandboxRequired])
        #expect(verdict(["open-data"], on: plain).eligible)
        #expect(verdict([], on: plain).eligible)
    }

    @Test("the strictest input decides, and lineage carries the class; a relaxed source does not")
    func lineage() throws {
        let mixed = verdict(["open-data", "ke-health"], on: plain)
        #expect(mixed.failures.first { $0.code == .sandboxRequired }?.subject == "ke-health")
        // `summary` is public itself, but derived from health data it was not relaxed from.
        let derived = verdict(["summary"], on: plain)
        #expect(derived.codes.contains(.sandboxRequired))
        #expect(derived.failures.first { $0.code == .sandboxRequired }?.subject == "summary←ke-health")
        #expect(verdict(["anonymised"], on: plain).eligible)
    }

    @Test("a pass's decision agrees with the explanation, and the runner is part of the host's policy key")
    func decideOnly() {
        let active = snapshot.active(at: now)
        let prepared = active.prepare(Fixture.job("asr", inputs: ["ke-health"]))
        for host in [sandboxed, plain, slurm] {
            let decided = snapshot.evaluate(prepared, on: host, at: now, decideOnly: true).eligible
            #expect(decided == snapshot.evaluate(prepared, on: host, at: now).eligible)
        }
        #expect(sandboxed.policyKey != plain.policyKey)
        var memo = EligibilityMemo(
            snapshot: snapshot, classes: [Fixture.job("asr", inputs: ["ke-health"])], hostKeys: [sandboxed, plain], at: now)
        let onSandbox = memo.eligible(0, 0)
        let onProcess = memo.eligible(0, 1)
        #expect(onSandbox)
        #expect(!onProcess)
    }

    @Test("a network job may not read data that is not public unless the rule allows it (allow or true)")
    func network() throws {
        let active = snapshot.active(at: now)
        func reasons(_ inputs: [String], network: Bool = true) -> [Reason] {
            active.jobReasons(Fixture.job("asr", inputs: inputs, network: network))
        }
        let refused = reasons(["ke-health"])
        #expect(refused.map(\.code) == [.network])
        let reason = try #require(refused.first)
        #expect(reason.category == .job)
        #expect(reason.subject == "ke-health")
        #expect(reason.rule == "dataset/ke-health@v1")
        #expect(reason.detail.contains("ke-health (health data) forbids network access from its jobs"))
        #expect(reasons(["ke-closed"]).map(\.code) == [.network])
        #expect(reasons(["ke-open"]).isEmpty)
        #expect(reasons(["ke-open-bool"]).isEmpty)
        // Public data never limits the network, whatever its rule says.
        #expect(reasons(["open-data"]).isEmpty)
        #expect(reasons(["open-denied"]).isEmpty)
        // Without network: true nothing is asked.
        #expect(reasons(["ke-health"], network: false).isEmpty)
        // Every dataset that forbids it is named; lineage binds too.
        #expect(Set(reasons(["ke-open", "ke-closed", "summary"]).compactMap(\.subject)) == ["ke-closed", "summary←ke-health"])
        // The job is excluded from every host, sandboxed or not.
        #expect(verdict(["ke-health"], on: sandboxed, network: true).codes == [.network])
        #expect(verdict(["ke-open"], on: sandboxed, network: true).eligible)
    }

    @Test("a dataset's network field takes allow, deny, true or false, and names itself otherwise")
    func parsing() throws {
        for (text, expected) in [(#""allow""#, true), ("true", true), (#""deny""#, false), ("false", false)] {
            let document = try Fixture.document(Fixture.dataset("d", extra: #""network": \#(text)"#))
            guard case .dataset(let rule) = document.body else {
                Issue.record("not a dataset")
                continue
            }
            #expect(rule.network == expected)
        }
        let bad = try Fixture.parse(Fixture.dataset("d", extra: #""network": "sometimes""#))
        guard case .failure(let failure) = bad else {
            Issue.record("network: sometimes was accepted")
            return
        }
        #expect(failure.errors.map(\.field) == ["network"])
        #expect(failure.errors.first?.message.contains("allow or deny") == true)
    }

    @Test("why: hosts held back only by their runner get a way out")
    func wayOut() {
        let hosts = [plain, slurm, sandboxed].map { host in
            (jurisdiction: host.jurisdiction, reasons: verdict(["ke-health"], on: host).failures)
        }
        #expect(ExplanationText.summary(hosts.map(\.reasons)) == "1/3 hosts eligible: 2 SANDBOX_REQUIRED(ke-health: sandbox hosts only)")
        #expect(ExplanationText.waysOut(hosts).contains { $0.hasPrefix("would be eligible on 2 hosts if they ran jobs in the sandbox") })
    }

    @Test("a job file's network is true, false or absent")
    func jobSpec() throws {
        func validate(_ network: String) throws -> Result<JobSpec, ValidationFailure> {
            JobSpec.validate(try Fixture.json(#"{"name": "j", "project": "p", "command": ["true"]\#(network)}"#))
        }
        #expect(try validate(#", "network": true"#).get().network == true)
        #expect(try validate(#", "network": false"#).get().network == false)
        #expect(try validate("").get().network == nil)
        guard case .failure(let failure) = try validate(#", "network": "yes""#) else {
            Issue.record("network: yes was accepted")
            return
        }
        #expect(failure.errors.map(\.field) == ["network"])
    }
}
