import ComityAPI
import ComityCore
import Foundation
import Logging
import PostgresNIO

/// `comity why` and `comity explain`: the sovereignty and capacity verdict of a job on every host.
extension Store {
    /// Why a job waits, or why it runs where it runs; `nil` when the job is not visible in `scope`.
    package func why(job id: Int64, scope: JobScope) async throws -> Explanation? {
        guard let view = try await job(id, scope: scope) else { return nil }
        return try await client.withConnection { connection in
            let context = try await policyContext(on: connection)
            let rows = try await connection.query(
                """
                select j.project_id, j.partner_id, j.kind, j.inputs, j.max_runtime_seconds, j.permitted_jurisdictions, a.policy_version, a.host_id,
                       j.preemptible, coalesce(a.borrowed, false), a.stop_after, a.stop_reason
                from jobs j left join attempts a on a.id = j.current_attempt where j.id = \(id)
                """, logger: logger
            ).decode((Int64, Int64, String, [String], Int64, [String]?, String?, Int64?, Bool, Bool, Date?, String?).self).collect()
            let network = view.spec.network ?? false
            guard let (project, partner, kind, inputs, runtime, permitted, placedUnder, placedHost, preemptible, borrowed, stopAfter, stopReason) = rows.first
            else { return nil }
            let facts = JobPolicyRow(
                id: id, projectID: project, partnerID: partner, kind: JobKind(rawValue: kind) ?? .training, inputs: inputs, maxRuntimeSeconds: runtime,
                network: network
            ).facts(context)
            let hosts = try await policyHosts(context, on: connection)
            let outcome: Explanation.Outcome =
                switch view.state {
                case .queued: .pending
                case .assigned, .running: .placed
                case .succeeded, .failed, .cancelled: .finished
                }
            let pending = PendingJob(id: id, resources: view.spec.resources, priority: view.spec.priority, partnerID: partner, projectID: project)
            var sharing = outcome == .pending ? try await sharingVerdict(pending, preemptible: preemptible, context: context, on: connection) : nil
            // A replica waits off the hosts where its service's other replicas run (SPREAD).
            if outcome == .pending { for (host, reason) in try await spreadReasons(job: id, on: connection) { sharing?.hosts[host, default: []].append(reason) } }
            var explanation = explain(
                facts, request: view.spec.resources, context: context, hosts: hosts, outcome: outcome, placedHost: placedHost, sharing: sharing)
            explanation.job = id
            explanation.permittedJurisdictions = permitted
            if outcome == .placed, let placedHost, let host = hosts.first(where: { $0.facts.id == placedHost }) {
                explanation.placedOn = host.facts.name
                explanation.placedUnder = placedUnder
                let own = host.partnerID == partner
                explanation.ranking =
                    (own ? "own host of \(facts.partner) (own hosts come first)" : "guest on \(host.facts.partner)'s host (no own host was eligible and free)")
                    + (borrowed ? "; borrowed beyond its partner's share, so a reclaim may preempt it" : "")
                    + "; best fit: fewest matching GPUs, then CPUs and memory left free; ties by host id"
                if let stopAfter {
                    explanation.sharing = "being preempted at \(stopAfter.formatted(.iso8601)): \(stopReason ?? "reclaimed")"
                }
            }
            return explanation
        }
    }

    /// What-if: the verdict for a job file, without submitting it.
    package func explain(_ spec: JobSpec, by principal: Principal) async throws -> Explanation {
        let ids = try await projectIDs(spec.project, field: "project")
        switch principal.role {
        case .admin, .auditor: break
        case .researcher where principal.projectID == ids.project: break
        case .partnerAdmin where principal.partnerID == ids.partner: break
        default: throw StoreError(.forbidden, "\(principal.role.rawValue) \(principal.name) may not use project \(spec.project)", field: "project")
        }
        return try await client.withConnection { connection in
            let context = try await policyContext(on: connection)
            let facts = JobPolicyRow(
                id: 0, projectID: ids.project, partnerID: ids.partner, kind: spec.kind, inputs: spec.inputs, maxRuntimeSeconds: spec.maxRuntimeSeconds,
                network: spec.network ?? false
            ).facts(context)
            let hosts = try await policyHosts(context, on: connection)
            let pending = PendingJob(id: 0, resources: spec.resources, priority: spec.priority, partnerID: ids.partner, projectID: ids.project)
            let sharing = try await sharingVerdict(pending, preemptible: spec.isPreemptible, context: context, on: connection)
            var explanation = explain(facts, request: spec.resources, context: context, hosts: hosts, outcome: .pending, placedHost: nil, sharing: sharing)
            if explanation.outcome == .pending, explanation.hosts.contains(where: { verdict in
                verdict.eligible && !verdict.reasons.contains { $0.code == .busy }
            }) {
                explanation.outcome = .placeable
            }
            explanation.permittedJurisdictions = context.snapshot.permitted(facts, from: Date()).codes
            return explanation
        }
    }

    func explain(
        _ facts: JobFacts, request: ResourceRequest, context: PolicyContext, hosts: [HostPolicyRow], outcome: Explanation.Outcome, placedHost: Int64?,
        sharing: SharingVerdict? = nil
    ) -> Explanation {
        let now = Date()
        let active = context.active(at: now)
        // What does not depend on the host, once for all hosts.
        let prepared = active.prepare(facts)
        // A job the rules can never admit is rejected: sharing has nothing to add.
        let rejectedByRules = prepared.jobReasons.contains { $0.category == .job }
        let jobReasons = prepared.jobReasons + (rejectedByRules ? [] : sharing?.job ?? [])
        var verdicts: [HostVerdict] = []
        var waysOutInput: [(jurisdiction: String, reasons: [Reason])] = []
        for host in hosts {
            let verdict = context.snapshot.evaluate(prepared, on: host.facts, at: now)
            // The job's own reasons are listed once, above the hosts.
            let hostFailures = verdict.failures.filter { !jobReasons.contains($0) }
            // A placed job's own attempt holds the capacity it needs: do not call its host busy.
            let free = host.facts.id == placedHost ? nil : host.free
            let capacity = host.facts.condition == .up ? CapacityCheck.reasons(request, total: host.total, free: free) : CapacityCheck.reasons(request, total: host.total, free: nil)
            let shared = sharing?.hosts[host.facts.id] ?? []
            let reasons = hostFailures + capacity + shared
            verdicts.append(
                HostVerdict(
                    host: host.facts.name, partner: host.facts.partner, region: host.facts.region, jurisdiction: host.facts.jurisdiction,
                    eligible: verdict.failures.isEmpty && capacity.filter({ $0.code != .busy }).isEmpty && shared.isEmpty, reasons: reasons,
                    admittedBy: verdict.failures.isEmpty ? verdict.admittedBy : []))
            waysOutInput.append((host.facts.jurisdiction, reasons))
        }
        // FAIR_SHARE orders, it does not bar: it is listed, but not as what keeps the job off hosts.
        let barring = jobReasons.filter { $0.code != .fairShare }
        let perHost = verdicts.map { verdict in verdict.eligible ? [] : verdict.reasons.isEmpty ? barring : verdict.reasons }
        var summary = ExplanationText.summary(perHost.map { $0.filter { $0.code != .busy } })
        let busy = verdicts.filter { $0.eligible && $0.reasons.contains { $0.code == .busy } }.count
        if busy > 0 { summary += "; \(busy) of the eligible busy now" }
        if !barring.isEmpty { summary = "job: " + barring.map(\.label).joined(separator: ", ") + "; " + summary }
        let rejected = jobReasons.contains { $0.category == .job }
        var explanation = Explanation(
            job: nil, outcome: rejected && outcome == .pending ? .rejected : outcome, summary: summary, policyVersion: active.id, evaluatedAt: now,
            jobReasons: jobReasons, hosts: verdicts, waysOut: barring.isEmpty ? ExplanationText.waysOut(waysOutInput) : [],
            permittedJurisdictions: nil)
        explanation.sharing = sharing?.summary
        return explanation
    }
}

/// What fair sharing says about a waiting job: quotas that hold it everywhere, per-host limits, its partner's
/// standing and any reclaim under way for it.
struct SharingVerdict: Sendable {
    var job: [Reason]
    var hosts: [Int64: [Reason]]
    var summary: String
}

extension Store {
    func sharingVerdict(_ job: PendingJob, preemptible: Bool, context: PolicyContext, on connection: PostgresConnection) async throws -> SharingVerdict {
        let sharing = try await sharingContext(on: connection)
        let pool = try await availableHosts(context, sharing: sharing, on: connection)
        let reservations = try await connection.query(
            "select r.job_id, r.host_id, h.name from reservations r join hosts h on h.id = r.host_id where r.expires_at > now()", logger: logger
        ).decode((Int64, Int64, String).self).collect()
        let round = SharingRound(sharing: sharing, pool: pool, preemptible: [job.id: preemptible], reservedHosts: [])
        var jobReasons: [Reason] = []
        if let (quota, held, resource) = round.admission.quotas.exceeded(
            partnerID: job.partnerID, projectID: job.projectID, region: nil, SharingRound.usage(job.resources))
        {
            jobReasons.append(SharingRound.Admission.quotaReason(quota, held, resource))
        }
        var hosts: [Int64: [Reason]] = [:]
        for host in pool.hosts {
            var reasons = round.admission.failures(job, service: !preemptible, on: host, collecting: true)
            if let other = reservations.first(where: { $0.1 == host.id && $0.0 != job.id }) {
                reasons.append(
                    Reason(
                        .reserved, subject: "job \(other.0)", category: .sharing,
                        detail: "reserved for job \(other.0), for which guests on it are being preempted", brief: "for job \(other.0)"))
            }
            if !reasons.isEmpty { hosts[host.id] = reasons }
        }
        let standing = round.partnerStandings[job.partnerID] ?? ShareStanding(entitled: .zero)
        let name = sharing.partners[job.partnerID]?.name ?? "#\(job.partnerID)"
        let ratio = standing.ratio(capacity: pool.capacity)
        if ratio > 1 + 1e-9 {
            // Not a bar, an order: jobs of partners further below their share are considered first.
            jobReasons.append(
                Reason(
                    .fairShare, subject: name, category: .sharing,
                    detail: ratio >= 1e9
                        ? "\(name) is entitled to no share of the pools: its jobs are considered after every entitled partner's (its own hosts always take them)"
                        : String(format: "%@ has had more than its share (ratio %.2f, factor %.2f): jobs of partners below their share are considered first", name, ratio, standing.factor(capacity: pool.capacity)),
                    brief: ratio >= 1e9 ? "no entitlement" : String(format: "ratio %.2f", ratio)))
        }
        let held = standing.allocated.fraction(of: pool.capacity)
        func shares(_ vector: ShareVector) -> String {
            ResourceKind.allCases.map { "\(SharingRound.Admission.percent(vector[$0])) \($0.rawValue)" }.joined(separator: ", ")
        }
        var summary =
            "fair share: \(name) is entitled to \(shares(standing.entitled)) and holds \(shares(held)); "
            + String(format: "ratio %.2f, factor %.2f", ratio, standing.factor(capacity: pool.capacity))
            + (standing.heldRatio(capacity: pool.capacity) > 1 + 1e-9 ? " (borrowing: its guests may be reclaimed)" : "")
        if let mine = reservations.first(where: { $0.0 == job.id }) {
            summary += "; reclaiming \(mine.2) for this job: guests there stop after the donor's grace"
        }
        return SharingVerdict(job: jobReasons, hosts: hosts, summary: summary)
    }
}
