/// Why a job may not run (on a host, or anywhere): a stable code, the rule and version that said so, and text.
public struct Reason: Sendable, Hashable, Codable {
    public enum Code: String, Sendable, Hashable, Codable, CaseIterable {
        // Job-level: rejected at submission.
        case unknownDataset = "E_UNKNOWN_DATASET"
        case unknownProject = "E_UNKNOWN_PROJECT"
        case useCondition = "E_USE_CONDITION"
        case residencyEmpty = "E_RESIDENCY_EMPTY"
        case federationForbidJob = "E_FEDERATION_FORBID"
        case outputExists = "E_OUTPUT_EXISTS"
        /// The job asks for the network and reads a dataset whose rule forbids it.
        case network = "E_NETWORK"
        // Host-level.
        case residency = "RESIDENCY"
        case labelRequired = "LABEL_REQUIRED"
        case exportControl = "EXPORT_CONTROL"
        /// Data that is not public goes only to hosts that run jobs in the sandbox.
        case sandboxRequired = "SANDBOX_REQUIRED"
        case donorNoPolicy = "DONOR_NO_POLICY"
        case donorNoPermit = "DONOR_NO_PERMIT"
        case donorForbid = "DONOR_FORBID"
        case donorWindow = "DONOR_WINDOW"
        case donorWindowFit = "DONOR_WINDOW_FIT"
        case federationForbid = "FEDERATION_FORBID"
        case policyFutureConflict = "POLICY_FUTURE_CONFLICT"
        case evalError = "EVAL_ERROR"
        case hostDown = "HOST_DOWN"
        case hostDraining = "HOST_DRAINING"
        case gpuModel = "GPU_MODEL"
        case gpuMemory = "GPU_MEMORY"
        case gpuCount = "GPU_COUNT"
        case cpu = "CPU"
        case memory = "MEMORY"
        case busy = "BUSY"
        /// Another replica of the same service runs on the host (replicas of one service go to distinct hosts).
        case spread = "SPREAD"
        // Fair sharing (docs/sharing.md).
        case quota = "QUOTA"
        case borrowLimit = "BORROW_LIMIT"
        case lendLimit = "LEND_LIMIT"
        case serviceGuest = "SERVICE_GUEST"
        case reserved = "RESERVED"
        case fairShare = "FAIR_SHARE"
        // What admitted a host (explanations of placed jobs).
        case residencyOK = "RESIDENCY_OK"
        case exportOK = "EXPORT_OK"
        case ownHost = "OWN_HOST"
        case donorPermit = "DONOR_PERMIT"
        case noForbid = "NO_FORBID"
    }

    /// Who made the rule; decides how a running job that breaks it is stopped.
    public enum Category: String, Sendable, Hashable, Codable {
        /// The job itself can never run (rejected at submission).
        case job
        /// A dataset's residency, labels, use conditions or export class: stopped at once.
        case data
        /// A federation guardrail: stopped at once.
        case federation
        /// A rule announced for later.
        case policy
        /// A rule could not be evaluated: excluded (fail closed), stopped at once.
        case evaluation
        /// A donor policy: running guests get the donor's grace period.
        case donor
        /// The host is down or draining.
        case host
        /// The host lacks (or has no free) CPUs, memory or GPUs.
        case capacity
        /// A rule that admitted the host.
        case admitted
        /// Quotas, borrowing and lending limits, reservations: the job waits; nothing running is stopped.
        case sharing
    }

    public var code: Code
    /// What the code is about (a dataset, a rule id), shown in parentheses.
    public var subject: String?
    /// The rule and version (`dataset/ke-health@v2`).
    public var rule: String?
    public var category: Category
    public var detail: String
    /// A few words for the summary line (`KE only`).
    public var brief: String?

    public init(_ code: Code, subject: String? = nil, rule: String? = nil, category: Category, detail: String, brief: String? = nil) {
        self.code = code
        self.subject = subject
        self.rule = rule
        self.category = category
        self.detail = detail
        self.brief = brief
    }

    /// `RESIDENCY(ke-health)`.
    public var label: String { subject.map { "\(code.rawValue)(\($0))" } ?? code.rawValue }

    /// `RESIDENCY(ke-health: KE only)`, for summaries.
    public var summaryLabel: String {
        switch (subject, brief) {
        case (let subject?, let brief?): "\(code.rawValue)(\(subject): \(brief))"
        case (nil, let brief?): "\(code.rawValue)(\(brief))"
        default: label
        }
    }

    /// Whether a running job that now fails this rule is stopped at once (data, federation and evaluation
    /// failures), rather than after the donor's grace (donor rules).
    public var stopsAtOnce: Bool {
        switch category {
        case .job, .data, .federation, .evaluation: true
        case .policy, .donor, .host, .capacity, .admitted, .sharing: false
        }
    }
}

/// The decision for one job on one host.
public struct Verdict: Sendable, Hashable {
    /// Every rule that excludes the host (all are evaluated, none short-circuits), unless only deciding.
    public var failures: [Reason]
    /// The rules that admitted it.
    public var admittedBy: [Reason]
    /// Only the decision is wanted: the first failure settles it and no reason text is built.
    let decideOnly: Bool
    private var failed = false

    public var eligible: Bool { decideOnly ? !failed : failures.isEmpty }

    public init(failures: [Reason] = [], admittedBy: [Reason] = []) {
        self.failures = failures
        self.admittedBy = admittedBy
        self.decideOnly = false
        self.failed = !failures.isEmpty
    }

    init(decideOnly: Bool) {
        self.failures = []
        self.admittedBy = []
        self.decideOnly = decideOnly
    }

    /// Whether reasons are being collected (an explanation), not just the decision.
    var collecting: Bool { !decideOnly }
    /// Deciding only, and already decided.
    var decided: Bool { decideOnly && failed }

    mutating func fail(_ reason: @autoclosure () -> Reason) {
        failed = true
        if !decideOnly { failures.append(reason()) }
    }

    mutating func admit(_ reason: @autoclosure () -> Reason) {
        if !decideOnly { admittedBy.append(reason()) }
    }
}
