import Foundation

/// A job with what the rules say about it regardless of host: its obligations (inputs and their sources), its
/// strictest class, and its host-independent reasons. Prepared by one ``ActivePolicies``.
public struct PreparedJob: Sendable {
    /// The job, with its data class filled in.
    public let facts: JobFacts
    let obligations: [ActivePolicies.Obligation]
    public let jobReasons: [Reason]
    let policiesID: String
}

/// Where a job's data may go, as the database checks it (see `migrations/0002_sovereignty.sql`).
public enum PermittedJurisdictions: Sendable, Hashable {
    case anywhere
    /// Only these jurisdiction codes (possibly none).
    case only(Set<String>)

    /// `nil` for anywhere, else the sorted codes.
    public var codes: [String]? {
        switch self {
        case .anywhere: nil
        case .only(let codes): codes.sorted()
        }
    }
}

extension ActivePolicies {
    /// A constraint a job must meet because of one input: the input's own rule, or that of a source it was derived
    /// from (unless the source's steward relaxed it).
    struct Obligation {
        /// The input the job names.
        var input: String
        /// The dataset whose rule binds (the input itself or a source).
        var source: String
        var rule: DatasetRule
        var label: String

        var subject: String { input == source ? input : "\(input)←\(source)" }
    }

    /// Every obligation of the job's inputs, and what could not be resolved.
    func obligations(_ job: JobFacts) -> (obligations: [Obligation], unknown: [String], errors: [Reason]) {
        var result: [Obligation] = []
        var unknown: [String] = []
        var errors: [Reason] = []
        for input in job.inputs {
            guard let version = datasets[input], case .dataset(let rule) = version.document.body else {
                unknown.append(input)
                continue
            }
            result.append(Obligation(input: input, source: input, rule: rule, label: version.label))
            var queue = rule.derivedFrom.filter { $0.relaxed == nil }.map(\.source)
            var seen: Set<String> = [input]
            while let source = queue.popLast() {
                guard seen.insert(source).inserted else { continue }
                guard let sourceVersion = datasets[source], case .dataset(let sourceRule) = sourceVersion.document.body else {
                    errors.append(
                        Reason(.evalError, subject: version.label, rule: version.label, category: .evaluation,
                               detail: "\(input) is derived from \(source), which is not in force: its constraints cannot be evaluated"))
                    continue
                }
                result.append(Obligation(input: input, source: source, rule: sourceRule, label: sourceVersion.label))
                queue += sourceRule.derivedFrom.filter { $0.relaxed == nil }.map(\.source)
            }
        }
        return (result, unknown, errors)
    }

    func dataClass(_ obligations: [Obligation]) -> DataClass {
        obligations.map(\.rule.dataClass).max() ?? .public
    }

    /// Host-independent reasons the job cannot run: anything here excludes every host. Reasons of category `.job`
    /// mean no fleet could ever run it (rejected at submission); `.evaluation` ones mean a rule is broken (the job
    /// waits, fail closed).
    public func jobReasons(_ job: JobFacts) -> [Reason] {
        var reasons: [Reason] = []
        let (obligations, unknown, errors) = obligations(job)
        for name in unknown {
            let hint = Suggestion.closest(to: name, among: datasets.keys).map { "; did you mean \($0)?" } ?? ""
            reasons.append(Reason(.unknownDataset, subject: name, category: .job, detail: "unknown dataset \(name)\(hint)"))
        }
        reasons += errors
        guard let project = facts.projects[job.project] else {
            reasons.append(Reason(.unknownProject, subject: job.project, category: .job, detail: "unknown project \(job.project)"))
            return reasons
        }
        let partnerCommercial = facts.partners[job.partner]?.commercial ?? false
        for obligation in obligations {
            let use = obligation.rule.use
            func fail(_ condition: String, _ detail: String) {
                reasons.append(
                    Reason(.useCondition, subject: "\(condition),\(obligation.subject)", rule: obligation.label, category: .job,
                           detail: "\(obligation.subject): \(detail)"))
            }
            if let purposes = use.purposes {
                if let purpose = project.purpose {
                    if !purposes.contains(purpose) {
                        fail("PURPOSE", "only for purposes \(purposes.joined(separator: ", ")); project \(job.project) is for \(purpose)")
                    }
                } else {
                    fail("PURPOSE", "only for purposes \(purposes.joined(separator: ", ")); project \(job.project) declares no purpose")
                }
            }
            if use.nonCommercial, project.commercial || partnerCommercial {
                fail("NCU", "non-commercial use only; \(project.commercial ? "project \(job.project)" : "partner \(job.partner)") is commercial")
            }
            if let partners = use.partners, !partners.contains(job.partner) {
                fail("PARTNER", "only for partners \(partners.joined(separator: ", ")); the job is \(job.partner)'s")
            }
            if let projects = use.projects, !projects.contains(job.project) {
                fail("PROJECT", "only for projects \(projects.joined(separator: ", "))")
            }
            if let kinds = use.kinds, !kinds.contains(job.kind) {
                fail("KIND", "only for \(kinds.map(\.rawValue).joined(separator: ", ")) jobs; this is \(job.kind.rawValue)")
            }
        }
        if job.network {
            for obligation in obligations where !obligation.rule.allowsNetwork {
                let inherited = obligation.input == obligation.source ? "" : " (inherited from \(obligation.source))"
                reasons.append(
                    Reason(.network, subject: obligation.subject, rule: obligation.label, category: .job,
                           detail: "\(obligation.source) (\(obligation.rule.dataClass.rawValue) data) forbids network access from its jobs\(inherited); "
                               + "drop network: true, or its steward allows it with network: allow"))
            }
        }
        var classed = job
        classed.dataClass = dataClass(obligations)
        for version in federation {
            guard case .federation(let policy) = version.document.body else { continue }
            for rule in policy.forbid where rule.jurisdictions == nil && rule.match.matches(classed) {
                reasons.append(
                    Reason(.federationForbidJob, subject: "\(version.document.name)#\(rule.id)", rule: version.label, category: .job,
                           detail: "federation rule \(version.document.name)#\(rule.id) forbids this job everywhere"))
            }
        }
        // Only constraints that can be evaluated: a broken rule fails closed (EVAL_ERROR, the job waits), and a forbid
        // without jurisdictions has its own reason above.
        if unknown.isEmpty, errors.isEmpty, case .only(let codes)? = allowed(classed, obligations), codes.isEmpty {
            let constraints = obligations.compactMap { o in o.rule.residency.allow.map { "\(o.subject) allows \($0.joined(separator: ", "))" } }
            reasons.append(
                Reason(.residencyEmpty, category: .job,
                       detail: "the inputs' residencies have no jurisdiction in common (\(constraints.joined(separator: "; ")))"))
        }
        return reasons
    }

    /// The jurisdictions the job's data may ever reach (conditional set members included): what the database
    /// checks when an attempt is bound to a host. Rules that cannot be evaluated permit nowhere.
    public func permitted(_ job: JobFacts) -> PermittedJurisdictions {
        let (obligations, unknown, errors) = obligations(job)
        if !unknown.isEmpty || !errors.isEmpty { return .only([]) }
        var classed = job
        classed.dataClass = dataClass(obligations)
        for version in federation {
            guard case .federation(let policy) = version.document.body else { continue }
            if policy.forbid.contains(where: { $0.jurisdictions == nil && $0.match.matches(classed) }) { return .only([]) }
        }
        return allowed(classed, obligations) ?? .only([])
    }

    /// The jurisdictions that the inputs' residencies and export classes, and the federation's forbids with
    /// jurisdictions, leave to `job` (classed); `nil` when one of them cannot be evaluated.
    func allowed(_ job: JobFacts, _ obligations: [Obligation]) -> PermittedJurisdictions? {
        var result: Set<String>?
        func intersect(_ codes: Set<String>) { result = result.map { $0.intersection(codes) } ?? codes }
        for obligation in obligations {
            let residency = obligation.rule.residency
            if let allow = residency.allow {
                guard let codes = possibleCodes(allow) else { return nil }
                intersect(codes)
            }
            if !residency.deny.isEmpty {
                guard possibleCodes(residency.deny) != nil else { return nil }
                intersect(Set(descendants.keys).subtracting(certainCodes(residency.deny)))
            }
            if let exportClass = obligation.rule.exportClass {
                guard let allowed = exportAllowed(exportClass), let codes = possibleCodes(allowed) else { return nil }
                intersect(codes)
            }
        }
        for version in federation {
            guard case .federation(let policy) = version.document.body else { continue }
            for rule in policy.forbid where rule.match.matches(job) {
                guard let jurisdictions = rule.jurisdictions else { continue }  // forbidden everywhere: see permitted
                guard possibleCodes(jurisdictions) != nil else { return nil }
                intersect(Set(descendants.keys).subtracting(certainCodes(jurisdictions)))
            }
        }
        return result.map(PermittedJurisdictions.only) ?? .anywhere
    }

    func exportAllowed(_ exportClass: String) -> [String]? {
        for version in federation {
            if case .federation(let policy) = version.document.body, let allowed = policy.exportClasses[exportClass] { return allowed }
        }
        return nil
    }

    /// Whether `job` may run on `host` at `time` under these rules, with every failing rule and every rule that
    /// admitted it. Capacity is not considered here (see ``CapacityCheck``).
    public func evaluate(_ job: JobFacts, on host: HostFacts, at time: Date, checkWindows: Bool = true) -> Verdict {
        evaluate(prepare(job), on: host, at: time, checkWindows: checkWindows)
    }

    /// What evaluation needs of a job that does not depend on the host, computed once per job class.
    public func prepare(_ job: JobFacts) -> PreparedJob {
        let (obligations, _, _) = obligations(job)
        var classed = job
        classed.dataClass = dataClass(obligations)
        return PreparedJob(facts: classed, obligations: obligations, jobReasons: jobReasons(job), policiesID: id)
    }

    /// Whether the prepared job may run on `host` at `time`; see ``evaluate(_:on:at:checkWindows:)``.
    ///
    /// - Parameter decideOnly: stop at the first failing rule and build no text: what a scheduling pass needs (the
    ///   verdict is the same; explanations evaluate every rule).
    public func evaluate(_ job: PreparedJob, on host: HostFacts, at time: Date, checkWindows: Bool = true, decideOnly: Bool = false) -> Verdict {
        var verdict = Verdict(decideOnly: decideOnly)
        for reason in job.jobReasons { verdict.fail(reason) }
        if verdict.decided { return verdict }
        switch host.condition {
        case .up: break
        case .down: verdict.fail(Reason(.hostDown, category: .host, detail: "\(host.name) is down (no recent heartbeat)"))
        case .draining: verdict.fail(Reason(.hostDraining, category: .host, detail: "\(host.name) is draining"))
        }
        if !verdict.decided { checkRunner(job, host, into: &verdict) }
        for obligation in job.obligations where !verdict.decided { checkData(obligation, host, into: &verdict) }
        if !verdict.decided { checkFederation(job.facts, host, into: &verdict) }
        if !verdict.decided { checkDonor(job.facts, host, at: time, checkWindows: checkWindows, into: &verdict) }
        return verdict
    }

    func evalError(_ rule: String?, _ error: EvaluationError) -> Reason {
        let name = error.rule ?? rule ?? "rule"
        return Reason(.evalError, subject: name, rule: error.rule ?? rule, category: .evaluation, detail: error.message + " (fail closed)")
    }

    /// Data that is not public goes only to hosts that run jobs in the sandbox (no network, nothing outside the work
    /// folder writable, the agent's state out of sight), so "may not leave" holds while the job runs.
    func checkRunner(_ job: PreparedJob, _ host: HostFacts, into verdict: inout Verdict) {
        guard job.facts.dataClass > .public, host.runner != .sandbox else { return }
        verdict.fail(sandboxRequired(job, host))
    }

    func sandboxRequired(_ job: PreparedJob, _ host: HostFacts) -> Reason {
        let strictest = job.obligations.first { $0.rule.dataClass == job.facts.dataClass }
        let subject = strictest?.subject ?? job.facts.inputs.joined(separator: ",")
        let dataClass = job.facts.dataClass.rawValue
        return Reason(
            .sandboxRequired, subject: subject, rule: strictest?.label, category: .data,
            detail: "\(subject) is \(dataClass) data: only hosts that run jobs in the sandbox may process it; "
                + "\(host.name) runs them with the \(host.runner.rawValue) runner",
            brief: "sandbox hosts only")
    }

    func checkData(_ obligation: Obligation, _ host: HostFacts, into verdict: inout Verdict) {
        let residency = obligation.rule.residency
        let inherited = obligation.input == obligation.source ? "" : " (inherited from \(obligation.source))"
        var passed = true
        if let allow = residency.allow {
            switch contains(allow, host) {
            case .failure(let error):
                verdict.fail(evalError(obligation.label, error))
                passed = false
            case .success(false):
                verdict.fail(
                    Reason(.residency, subject: obligation.subject, rule: obligation.label, category: .data,
                           detail: "host jurisdiction \(host.jurisdiction) not in \(allow.joined(separator: ", "))\(inherited)",
                           brief: "\(allow.joined(separator: ", ")) only"))
                passed = false
            case .success(true): break
            }
        }
        if !residency.deny.isEmpty {
            switch contains(residency.deny, host) {
            case .failure(let error):
                verdict.fail(evalError(obligation.label, error))
                passed = false
            case .success(true):
                verdict.fail(
                    Reason(.residency, subject: obligation.subject, rule: obligation.label, category: .data,
                           detail: "host jurisdiction \(host.jurisdiction) is in \(residency.deny.joined(separator: ", ")), which \(obligation.source) denies\(inherited)",
                           brief: "not \(residency.deny.joined(separator: ", "))"))
                passed = false
            case .success(false): break
            }
        }
        if let partners = residency.partners, !partners.contains(host.partner) {
            verdict.fail(
                Reason(.residency, subject: obligation.subject, rule: obligation.label, category: .data,
                       detail: "host owner \(host.partner) is not among \(partners.joined(separator: ", "))\(inherited)",
                       brief: "hosts of \(partners.joined(separator: ", ")) only"))
            passed = false
        }
        for (label, value) in residency.hostLabels.sorted(by: { $0.key < $1.key }) where host.labels[label] != value {
            verdict.fail(
                Reason(.labelRequired, subject: obligation.subject, rule: obligation.label, category: .data,
                       detail: "needs host label \(label)=\(value); \(host.name) has \(host.labels[label].map { "\(label)=\($0)" } ?? "none")\(inherited)",
                       brief: "\(label)=\(value)"))
            passed = false
        }
        if let exportClass = obligation.rule.exportClass {
            if let allowed = exportAllowed(exportClass) {
                switch contains(allowed, host) {
                case .failure(let error):
                    verdict.fail(evalError(obligation.label, error))
                case .success(false):
                    verdict.fail(
                        Reason(.exportControl, subject: obligation.subject, rule: obligation.label, category: .data,
                               detail: "export class \(exportClass) may be loaded only in \(allowed.joined(separator: ", ")); host is in \(host.jurisdiction)\(inherited)",
                               brief: "\(exportClass): \(allowed.joined(separator: ", "))"))
                case .success(true):
                    verdict.admit(
                        Reason(.exportOK, subject: obligation.subject, rule: obligation.label, category: .admitted,
                               detail: "export class \(exportClass) allows \(host.jurisdiction)"))
                }
            } else {
                verdict.fail(
                    evalError(obligation.label, EvaluationError(rule: obligation.label, message: "export class \(exportClass) is not defined by any federation policy in force")))
            }
        }
        if passed {
            verdict.admit(
                Reason(.residencyOK, subject: obligation.subject, rule: obligation.label, category: .admitted,
                       detail: residency.allow.map { "host jurisdiction \(host.jurisdiction) is in \($0.joined(separator: ", "))" } ?? "no residency limit"))
        }
    }

    func checkFederation(_ job: JobFacts, _ host: HostFacts, into verdict: inout Verdict) {
        var forbidden = false
        for version in federation {
            guard case .federation(let policy) = version.document.body else { continue }
            for rule in policy.forbid where rule.match.matches(job) {
                let subject = "\(version.document.name)#\(rule.id)"
                guard let jurisdictions = rule.jurisdictions else { continue }  // job-level: in jobReasons
                switch contains(jurisdictions, host) {
                case .failure(let error):
                    verdict.fail(evalError(version.label, error))
                    forbidden = true
                case .success(true):
                    verdict.fail(
                        Reason(.federationForbid, subject: subject, rule: version.label, category: .federation,
                               detail: "federation rule \(subject) forbids such jobs in \(jurisdictions.joined(separator: ", "))"))
                    forbidden = true
                case .success(false): break
                }
            }
        }
        if !forbidden {
            verdict.admit(Reason(.noForbid, category: .admitted, detail: "no federation forbid matches"))
        }
    }

    func checkDonor(_ job: JobFacts, _ host: HostFacts, at time: Date, checkWindows: Bool, into verdict: inout Verdict) {
        if job.partner == host.partner {
            verdict.admit(Reason(.ownHost, category: .admitted, detail: "\(host.name) belongs to \(job.partner): its own jobs are not guests"))
            return
        }
        guard let version = donors[host.partner], case .donorPolicy(let policy) = version.document.body else {
            verdict.fail(
                Reason(.donorNoPolicy, subject: host.partner, category: .donor,
                       detail: "\(host.partner) has published no donation policy: its hosts take no guests"))
            return
        }
        let zoneName = host.labels["timezone"] ?? policy.timezone
        guard let zone = zoneName == policy.timezone ? donorZones[host.partner] : TimeZone(identifier: zoneName) else {
            verdict.fail(
                evalError(version.label, EvaluationError(rule: version.label, message: "time zone \(zoneName) of \(host.name) is unknown")))
            return
        }
        for rule in policy.forbid where rule.match.matches(job) {
            verdict.fail(
                Reason(.donorForbid, subject: "\(host.partner)#\(rule.id)", rule: version.label, category: .donor,
                       detail: "\(host.partner)'s donation policy forbids such guests (\(rule.id))"))
        }
        let candidates = policy.permit.filter { $0.match.matches(job) }
        guard !candidates.isEmpty else {
            verdict.fail(
                Reason(.donorNoPermit, subject: host.partner, rule: version.label, category: .donor,
                       detail: "no permit of \(host.partner)'s donation policy admits \(job.partner)/\(job.project) \(job.kind.rawValue) jobs"))
            return
        }
        let clock = WindowClock(zone: zone)
        var windowReasons: [Reason] = []
        for rule in candidates {
            guard checkWindows, let windows = rule.windows else {
                verdict.admit(
                    Reason(.donorPermit, subject: "\(host.partner)#\(rule.id)", rule: version.label, category: .admitted,
                           detail: "\(host.partner)'s permit \(rule.id) admits this guest"))
                return
            }
            guard clock.isOpen(windows, at: time) else {
                if verdict.collecting {
                    let next = clock.nextOpen(windows, after: time)
                    let wait = next.map { " (opens in \(Self.duration($0.timeIntervalSince(time))))" } ?? ""
                    windowReasons.append(
                        Reason(.donorWindow, subject: "\(host.partner)#\(rule.id)", rule: version.label, category: .donor,
                               detail: "guests only \(Self.describe(windows)) \(zone.identifier)\(wait)",
                               brief: "guests \(Self.describe(windows)) \(zone.identifier)\(next.map { ", opens in \(Self.duration($0.timeIntervalSince(time)))" } ?? "")"))
                }
                continue
            }
            // A close that cannot be placed (a window ending inside the hour repeated when clocks go back) fails closed.
            if rule.mustFinishWithinWindow, case let closes = clock.closing(windows, at: time) ?? time,
                time.addingTimeInterval(TimeInterval(job.maxRuntimeSeconds)) > closes
            {
                if verdict.collecting {
                    windowReasons.append(
                        Reason(.donorWindowFit, subject: "\(host.partner)#\(rule.id)", rule: version.label, category: .donor,
                               detail: "guests must finish within the window, which closes in \(Self.duration(closes.timeIntervalSince(time))); max_runtime is \(Self.duration(TimeInterval(job.maxRuntimeSeconds)))"))
                }
                continue
            }
            verdict.admit(
                Reason(.donorPermit, subject: "\(host.partner)#\(rule.id)", rule: version.label, category: .admitted,
                       detail: "\(host.partner)'s permit \(rule.id) admits this guest now"))
            return
        }
        // No permit admits the guest now: every window reason (or, deciding only, just the verdict).
        if windowReasons.isEmpty {
            verdict.fail(Reason(.donorWindow, subject: host.partner, rule: version.label, category: .donor, detail: "outside every window"))
        }
        for reason in windowReasons { verdict.fail(reason) }
    }

    static func describe(_ windows: [TimeWindow]) -> String {
        windows.map { window in
            let days = window.days.map { $0.map(\.rawValue).joined(separator: ",") + " " } ?? ""
            return "\(days)\(clockText(window.fromMinute))-\(clockText(window.toMinute))"
        }.joined(separator: " or ")
    }

    static func clockText(_ minute: Int) -> String {
        let hours = minute / 60, minutes = minute % 60
        return (hours < 10 ? "0" : "") + "\(hours):" + (minutes < 10 ? "0" : "") + "\(minutes)"
    }

    /// `3h12m`, `2d4h`, `45s`.
    public static func duration(_ interval: TimeInterval) -> String {
        let seconds = max(0, Int(interval.rounded()))
        if seconds < 60 { return "\(seconds)s" }
        let minutes = seconds / 60
        if minutes < 60 { return "\(minutes)m" }
        if minutes < 24 * 60 { return "\(minutes / 60)h" + (minutes % 60 == 0 ? "" : "\(minutes % 60)m") }
        return "\(minutes / 1440)d" + ((minutes % 1440) / 60 == 0 ? "" : "\((minutes % 1440) / 60)h")
    }
}

/// Recurring windows in one time zone. Local times come from `Calendar`, so daylight-saving shifts are honoured: a
/// window from 18:00 is at 18:00 local time on both sides of a change, and a start inside a skipped hour moves to
/// the first valid time after it.
struct WindowClock {
    let calendar: Calendar

    init(zone: TimeZone) {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        self.calendar = calendar
    }

    func isOpen(_ windows: [TimeWindow], at time: Date) -> Bool {
        let parts = calendar.dateComponents([.weekday, .hour, .minute], from: time)
        let minute = (parts.hour ?? 0) * 60 + (parts.minute ?? 0)
        let day = Weekday(calendarWeekday: parts.weekday ?? 1)
        return windows.contains { window in
            func on(_ day: Weekday) -> Bool { window.days?.contains(day) ?? true }
            if window.fromMinute == window.toMinute { return on(day) }
            if window.fromMinute < window.toMinute { return on(day) && minute >= window.fromMinute && minute < window.toMinute }
            return (on(day) && minute >= window.fromMinute) || (on(day.previous) && minute < window.toMinute)
        }
    }

    /// Occurrences of a window that start on the local days around `time`.
    func occurrences(_ window: TimeWindow, around time: Date, days range: ClosedRange<Int>) -> [(start: Date, end: Date)] {
        // `from == to` is the whole day, as in `isOpen`.
        let (from, to) = window.fromMinute == window.toMinute ? (0, 24 * 60) : (window.fromMinute, window.toMinute)
        let today = calendar.startOfDay(for: time)
        var result: [(Date, Date)] = []
        for offset in range {
            guard let day = calendar.date(byAdding: .day, value: offset, to: today) else { continue }
            let weekday = Weekday(calendarWeekday: calendar.component(.weekday, from: day))
            if let days = window.days, !days.contains(weekday) { continue }
            guard let start = at(from, of: day) else { continue }
            let endDay = to > from ? day : calendar.date(byAdding: .day, value: 1, to: day) ?? day
            guard let end = at(to, of: endDay) else { continue }
            result.append((start, end))
        }
        return result
    }

    func at(_ minute: Int, of day: Date) -> Date? {
        if minute == 24 * 60 { return calendar.date(byAdding: .day, value: 1, to: day) }
        return calendar.date(bySettingHour: minute / 60, minute: minute % 60, second: 0, of: day)
    }

    func nextOpen(_ windows: [TimeWindow], after time: Date) -> Date? {
        windows.flatMap { occurrences($0, around: time, days: 0...8) }.map(\.start).filter { $0 > time }.min()
    }

    /// When the window open at `time` closes: the end of the stretch of open occurrences, where adjoining or
    /// overlapping ones run on (a weekend written as Saturday and Sunday, an evening split at midnight), looked at up
    /// to a week ahead.
    func closing(_ windows: [TimeWindow], at time: Date) -> Date? {
        let all = windows.flatMap { occurrences($0, around: time, days: -1...7) }
        guard var end = all.filter({ $0.start <= time && time < $0.end }).map(\.end).max() else { return nil }
        while let later = all.filter({ $0.start <= end && $0.end > end }).map(\.end).max() { end = later }
        return end
    }
}

/// The rules' verdict per (job class, host key) for one scheduling pass, decided on first use: each class is
/// prepared once and each pair evaluated once, deciding only (no reason text). Rebuilt every pass (donor windows
/// depend on the time).
public struct EligibilityMemo {
    let snapshot: PolicySnapshot
    let active: ActivePolicies
    let classes: [JobFacts]
    let hostKeys: [HostFacts]
    let time: Date
    var prepared: [PreparedJob?]
    /// 0 unknown, 1 eligible, 2 not; indexed `class * hostKeys.count + key`.
    var verdicts: [UInt8]
    /// How many pairs were evaluated.
    public private(set) var evaluated = 0

    /// - Parameters:
    ///   - classes: the facts of each job class (`PendingJob.policyClass` indexes them).
    ///   - hostKeys: one host's facts per policy key (`HostAvailability.policyKey` indexes them).
    public init(snapshot: PolicySnapshot, classes: [JobFacts], hostKeys: [HostFacts], at time: Date) {
        self.snapshot = snapshot
        self.active = snapshot.active(at: time)
        self.classes = classes
        self.hostKeys = hostKeys
        self.time = time
        self.prepared = Array(repeating: nil, count: classes.count)
        self.verdicts = [UInt8](repeating: 0, count: classes.count * hostKeys.count)
    }

    public mutating func eligible(_ policyClass: Int, _ policyKey: Int) -> Bool {
        let slot = policyClass * hostKeys.count + policyKey
        if verdicts[slot] != 0 { return verdicts[slot] == 1 }
        let job = prepared[policyClass] ?? active.prepare(classes[policyClass])
        prepared[policyClass] = job
        let eligible = snapshot.evaluate(job, on: hostKeys[policyKey], at: time, decideOnly: true).eligible
        verdicts[slot] = eligible ? 1 : 2
        evaluated += 1
        return eligible
    }
}
