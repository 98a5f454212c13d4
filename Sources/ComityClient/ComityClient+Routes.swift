import ComityAPI
import ComityCore
import Foundation
import NIOCore
import NIOHTTP1

/// One typed method per route of `docs/openapi.yaml`.
extension ComityClient {
    // MARK: Admin

    public func whoami() async throws -> WhoAmI { try await send(.GET, "/v1/whoami") }

    public func addJurisdiction(_ jurisdiction: Jurisdiction) async throws -> Jurisdiction {
        try await send(.POST, "/v1/jurisdictions", body: jurisdiction)
    }

    public func jurisdictions() async throws -> [Jurisdiction] { try await send(.GET, "/v1/jurisdictions") }

    public func addRegion(_ region: Region) async throws -> Region { try await send(.POST, "/v1/regions", body: region) }

    public func regions() async throws -> [Region] { try await send(.GET, "/v1/regions") }

    public func addPartner(_ partner: Partner) async throws -> Partner { try await send(.POST, "/v1/partners", body: partner) }

    public func partners() async throws -> [Partner] { try await send(.GET, "/v1/partners") }

    public func addProject(_ project: Project) async throws -> Project { try await send(.POST, "/v1/projects", body: project) }

    public func projects() async throws -> [Project] { try await send(.GET, "/v1/projects") }

    public func createToken(_ request: CreateTokenRequest) async throws -> CreatedToken {
        try await send(.POST, "/v1/tokens", body: request)
    }

    public func revokeToken(_ id: Int64) async throws -> RevokedToken { try await send(.DELETE, "/v1/tokens/\(id)") }

    public func createJoinToken(_ request: CreateJoinTokenRequest) async throws -> CreatedJoinToken {
        try await send(.POST, "/v1/join-tokens", body: request)
    }

    public func hosts() async throws -> [HostView] { try await send(.GET, "/v1/hosts", as: HostList.self).hosts }

    // MARK: Jobs

    /// Submits one job document (decoded from YAML or JSON).
    public func submit(_ document: JSONValue) async throws -> JobView { try await send(.POST, "/v1/jobs", body: document) }

    /// Submits one job document as an array job (`1-10000`, `0-99:2`); each job gets `COMITY_ARRAY_INDEX`.
    public func submitArray(_ document: JSONValue, array: String) async throws -> [Int64] {
        try await send(.POST, "/v1/jobs", query: ["array": array], body: document, as: JobSubmission.self).ids
    }

    public func jobs(state: JobState? = nil, project: String? = nil, limit: Int? = nil) async throws -> [JobView] {
        try await send(.GET, "/v1/jobs", query: ["state": state?.rawValue, "project": project, "limit": limit.map(String.init)], as: JobList.self).jobs
    }

    /// The job; with `waitWhile`, the server holds the answer up to `waitSeconds` until the state differs.
    public func job(_ id: Int64, waitWhile state: JobState? = nil, waitSeconds: Int = 25) async throws -> JobView {
        try await send(
            .GET, "/v1/jobs/\(id)", query: ["wait_while": state?.rawValue, "wait": state == nil ? nil : String(waitSeconds)],
            timeout: .seconds(Int64(waitSeconds) + 30)
        )
    }

    public func cancel(_ id: Int64) async throws -> JobView { try await send(.POST, "/v1/jobs/\(id)/cancel") }

    public func events(_ id: Int64) async throws -> [JobEventView] {
        try await send(.GET, "/v1/jobs/\(id)/events", as: JobEventList.self).events
    }

    /// Log chunks after `after`; with `waitSeconds`, held until there is more or the job ends.
    public func logs(_ id: Int64, after: Int64 = 0, waitSeconds: Int? = nil) async throws -> LogPage {
        try await send(
            .GET, "/v1/jobs/\(id)/logs", query: ["after": String(after), "wait": waitSeconds.map(String.init)],
            timeout: .seconds(Int64(waitSeconds ?? 0) + 30)
        )
    }

    // MARK: Agent

    public func enroll(_ request: EnrollRequest) async throws -> EnrollResponse {
        try await send(.POST, "/v1/agent/enroll", body: request)
    }

    public func heartbeat(_ request: HeartbeatRequest) async throws -> HeartbeatResponse {
        try await send(.POST, "/v1/agent/heartbeat", body: request)
    }

    /// New assignments for this agent's host; held up to `waitSeconds` until there is one.
    public func assignments(waitSeconds: Int) async throws -> [Assignment] {
        try await send(
            .GET, "/v1/agent/assignments", query: ["wait": String(waitSeconds)], timeout: .seconds(Int64(waitSeconds) + 30),
            as: AssignmentList.self
        ).assignments
    }

    public func start(attempt: Int64) async throws -> AttemptAck { try await send(.POST, "/v1/agent/attempts/\(attempt)/start") }

    public func appendLog(attempt: Int64, _ chunk: LogAppend) async throws -> AttemptAck {
        try await send(.POST, "/v1/agent/attempts/\(attempt)/logs", body: chunk)
    }

    public func finish(attempt: Int64, _ request: FinishRequest) async throws -> AttemptAck {
        try await send(.POST, "/v1/agent/attempts/\(attempt)/finish", body: request)
    }

    /// Several starts and ends in one request (see ``AttemptReporter``, which gathers them).
    public func report(_ reports: AttemptReports) async throws -> AttemptReportResults {
        try await send(.POST, "/v1/agent/reports", body: reports)
    }

    // MARK: Sovereignty

    public func applyPolicy(_ request: PolicyApplyRequest) async throws -> PolicyApplyResult {
        try await send(.POST, "/v1/policies", body: request)
    }

    public func policies(kind: PolicyKind? = nil) async throws -> [PolicyVersionView] {
        try await send(.GET, "/v1/policies" + (kind.map { "?kind=\($0.rawValue)" } ?? ""), as: PolicyList.self).policies
    }

    public func policyHistory(kind: PolicyKind, name: String) async throws -> [PolicyVersionView] {
        try await send(.GET, "/v1/policies/\(kind.rawValue)/\(name.urlPathEscaped)", as: PolicyList.self).policies
    }

    public func datasets() async throws -> [DatasetView] { try await send(.GET, "/v1/datasets", as: DatasetList.self).datasets }

    public func dataset(_ name: String) async throws -> DatasetView { try await send(.GET, "/v1/datasets/\(name.urlPathEscaped)") }

    public func why(_ id: Int64) async throws -> Explanation { try await send(.GET, "/v1/jobs/\(id)/why") }

    public func explain(_ document: JSONValue) async throws -> Explanation { try await send(.POST, "/v1/explain", body: document) }

    // MARK: Audit

    /// Ledger entries after `after`; `query` holds filters (`job`, `host`, `partner`, `dataset`, `region`, `kind`,
    /// `since`, `until`).
    public func auditEntries(after: Int64, limit: Int, query: [String: String] = [:]) async throws -> [AuditEntry] {
        var items = ["after=\(after)", "limit=\(limit)"]
        for (key, value) in query.sorted(by: { $0.key < $1.key }) { items.append("\(key)=\(value.urlQueryEscaped)") }
        return try await send(.GET, "/v1/audit/entries?" + items.joined(separator: "&"), as: AuditEntryList.self).entries
    }

    public func auditChain(after: Int64, limit: Int) async throws -> [AuditLink] {
        try await send(.GET, "/v1/audit/chain?after=\(after)&limit=\(limit)", as: AuditChain.self).links
    }

    public func auditCheckpoint() async throws -> AuditCheckpointView { try await send(.GET, "/v1/audit/checkpoint") }

    // MARK: Sharing

    public func shares() async throws -> SharesReport { try await send(.GET, "/v1/shares") }

    /// Resource-hours used and contributed; `since` is an ISO 8601 time or a duration back from now (`7d`).
    public func usage(by grouping: UsageReport.Grouping? = nil, partner: String? = nil, since: String? = nil) async throws -> UsageReport {
        try await send(.GET, "/v1/usage", query: ["by": grouping?.rawValue, "partner": partner, "since": since])
    }

    public func grants(includeRevoked: Bool = false) async throws -> [GrantView] {
        try await send(.GET, "/v1/grants", query: ["all": includeRevoked ? "true" : nil])
    }

    public func addGrant(_ request: GrantRequest) async throws -> GrantView { try await send(.POST, "/v1/grants", body: request) }

    /// Revokes an active grant; a missing or already revoked one is a 404 ``ClientError``.
    public func revokeGrant(_ id: Int64) async throws { _ = try await raw(.DELETE, "/v1/grants/\(id)", body: nil) }

    public func quotas() async throws -> [QuotaView] { try await send(.GET, "/v1/quotas") }

    public func setQuota(_ request: QuotaRequest) async throws -> QuotaView { try await send(.PUT, "/v1/quotas", body: request) }

    public func removeQuota(_ id: Int64) async throws { _ = try await raw(.DELETE, "/v1/quotas/\(id)", body: nil) }

    public func setLending(partner: String, _ request: LendingRequest) async throws -> LendingRequest {
        try await send(.PUT, "/v1/partners/\(partner.urlPathEscaped)/lending", body: request)
    }

    public func gpuWeights() async throws -> [GPUWeight] { try await send(.GET, "/v1/gpu-weights") }

    public func setGPUWeight(_ pattern: String, weight: Double) async throws -> GPUWeight {
        try await send(.PUT, "/v1/gpu-weights/\(pattern.urlPathEscaped)", body: ["weight": weight])
    }

    public func removeGPUWeight(_ pattern: String) async throws { _ = try await raw(.DELETE, "/v1/gpu-weights/\(pattern.urlPathEscaped)", body: nil) }
}

extension String {
    /// The string as a URL query value.
    var urlQueryEscaped: String {
        addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~:"))) ?? self
    }

    /// The string as one URL path segment.
    var urlPathEscaped: String {
        addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? self
    }
}
