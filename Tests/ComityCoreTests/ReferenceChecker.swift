import ComityCore
import Foundation

/// The rules, written again as plainly as possible and without the engine: may `job` run on `host`?
///
/// "A job may run on a host only if every input dataset (and every model it loads) permits that host, the host owner's
/// policy admits the job, and no forbid from anyone matches. Deny overrides permit; the default is deny; rule order
/// never matters. A partner that published no donation policy takes no guests (its own jobs always may use its own
/// hosts, subject to data rules). Fail closed: a rule that cannot be evaluated excludes the host. Lineage: derived
/// data keeps its sources' residency, class and use conditions unless the steward relaxed them. A job is not placed
/// where a rule already announced would force it off before its max_runtime ends."
///
/// Issue 7: data that is not public is processed only on hosts that run jobs in the sandbox; a job that asks for the
/// network may not read data that is not public unless each such dataset allows it (`network: allow`).
struct ReferenceChecker {
    let world: PolicyWorld

    func eligible(_ job: PolicyWorld.Job, on host: PolicyWorld.Host) -> Bool {
        guard host.condition == .up, rulesHold(job, host, at: world.now, windows: true) else { return false }
        let end = world.now.addingTimeInterval(TimeInterval(job.runtime))
        return announced.filter { $0 > world.now && $0 <= end }.allSatisfy { rulesHold(job, host, at: $0, windows: false) }
    }

    /// Whether the job can never run anywhere: an unknown project or input, a use condition it fails, a forbid
    /// without jurisdictions.
    func rejected(_ job: PolicyWorld.Job) -> Bool {
        guard let project = world.projects[job.project] else { return true }
        if job.inputs.contains(where: { inForce(world.datasets[$0], at: world.now) == nil }) { return true }
        // A source that is not in force is a broken rule: the job waits (fail closed) rather than being rejected.
        guard let data = obligations(job, at: world.now) else { return false }
        return data.contains { !usable($0, job, project) || !networkAllowed($0, job) }
            || forbids(job, data).contains { $0.jurisdictions == nil }
    }

    var announced: [Date] {
        world.datasets.values.flatMap { $0.map(\.from) } + world.donors.values.flatMap { $0.map(\.from) } + world.federation.map(\.from)
    }

    /// The version in force: the latest one already effective.
    func inForce<T>(_ versions: [PolicyWorld.Versioned<T>]?, at time: Date) -> T? {
        versions?.last { $0.from <= time }?.value
    }

    /// The job's inputs and, through lineage, every source not relaxed; `nil` if one is unknown.
    func obligations(_ job: PolicyWorld.Job, at time: Date) -> [PolicyWorld.Dataset]? {
        var found: [PolicyWorld.Dataset] = []
        var queue = job.inputs
        var seen: Set<String> = []
        while let name = queue.popLast() {
            guard seen.insert(name).inserted else { continue }
            guard let dataset = inForce(world.datasets[name], at: time) else { return nil }
            found.append(dataset)
            queue += dataset.derivedFrom.filter { !$0.relaxed }.map(\.name)
        }
        return found
    }

    func usable(_ d: PolicyWorld.Dataset, _ job: PolicyWorld.Job, _ project: PolicyWorld.Project) -> Bool {
        if let purposes = d.purposes, !purposes.contains(project.purpose ?? "(none)") { return false }
        if d.nonCommercial, project.commercial || world.partners[job.partner] == true { return false }
        if let partners = d.usePartners, !partners.contains(job.partner) { return false }
        if let projects = d.useProjects, !projects.contains(job.project) { return false }
        if let kinds = d.useKinds, !kinds.contains(job.kind) { return false }
        return true
    }

    func networkAllowed(_ d: PolicyWorld.Dataset, _ job: PolicyWorld.Job) -> Bool {
        !job.network || d.dataClass == .public || d.network == true
    }

    func matches(_ match: PolicyWorld.Match, _ job: PolicyWorld.Job, _ data: [PolicyWorld.Dataset]) -> Bool {
        let strictest = data.map(\.dataClass).max() ?? .public
        return (match.partners?.contains(job.partner) ?? true) && (match.projects?.contains(job.project) ?? true)
            && (match.kinds?.contains(job.kind) ?? true) && (match.classes?.contains(strictest) ?? true)
    }

    func forbids(_ job: PolicyWorld.Job, _ data: [PolicyWorld.Dataset], at time: Date? = nil) -> [PolicyWorld.Forbid] {
        (inForce(world.federation, at: time ?? world.now)?.forbids ?? []).filter { matches($0.match, job, data) }
    }

    func rulesHold(_ job: PolicyWorld.Job, _ host: PolicyWorld.Host, at time: Date, windows: Bool) -> Bool {
        guard let project = world.projects[job.project], let data = obligations(job, at: time) else { return false }
        let federation = inForce(world.federation, at: time)
        if data.contains(where: { $0.dataClass != .public }), host.runner != .sandbox { return false }
        for d in data {
            guard usable(d, job, project), networkAllowed(d, job) else { return false }
            if let allow = d.allow, inArea(allow, host) != true { return false }
            if !d.deny.isEmpty, inArea(d.deny, host) != false { return false }
            if let partners = d.hostPartners, !partners.contains(host.partner) { return false }
            if d.hostLabels.contains(where: { host.labels[$0.key] != $0.value }) { return false }
            if let exportClass = d.exportClass {
                guard let area = federation?.exportClasses[exportClass], inArea(area, host) == true else { return false }
            }
        }
        for forbid in forbids(job, data, at: time) {
            guard let area = forbid.jurisdictions, inArea(area, host) == false else { return false }
        }
        guard job.partner != host.partner else { return true }  // own hosts: no donor policy applies
        guard let donor = inForce(world.donors[host.partner], at: time),
            let zone = TimeZone(identifier: host.labels["timezone"] ?? donor.timezone)
        else { return false }
        if donor.forbids.contains(where: { matches($0.match, job, data) }) { return false }
        return donor.permits.contains { permit in
            guard matches(permit.match, job, data) else { return false }
            guard windows, let shapes = permit.windows else { return true }
            // Open now; with must-finish, open at every quarter hour until max_runtime ends.
            let span = permit.mustFinish ? Int(job.runtime) : 1
            return stride(from: 0, to: span, by: 900).allSatisfy { isOpen(shapes, zone, time.addingTimeInterval(TimeInterval($0))) }
        }
    }

    /// Whether the host is inside the area: `nil` when that cannot be known (a set that loops or names something
    /// unknown, or a host lacking a label a member's condition reads, while no member says yes).
    func inArea(_ refs: [String], _ host: PolicyWorld.Host) -> Bool? {
        var members: [(code: String, conditions: [PolicyWorld.Condition])] = []
        for ref in refs {
            guard let expanded = expand(ref, path: []) else { return nil }
            members += expanded
        }
        var unknown = false
        for member in members where within(host.jurisdiction, member.code) {
            // A condition that is false rules the member out; one whose label the host lacks leaves it unknown.
            if member.conditions.contains(where: { condition in host.labels[condition.label].map { $0 != condition.equals } ?? false }) {
                continue
            }
            if member.conditions.allSatisfy({ host.labels[$0.label] != nil }) { return true }
            unknown = true
        }
        return unknown ? nil : false
    }

    /// A jurisdiction (standing for itself and all it contains) or a set's members, each with every condition on
    /// the way to it; `nil` for a loop or an unknown name.
    func expand(_ ref: String, path: [String]) -> [(code: String, conditions: [PolicyWorld.Condition])]? {
        if world.parents[ref] != nil { return [(ref, [])] }
        guard let members = world.sets[ref], !path.contains(ref) else { return nil }
        var result: [(code: String, conditions: [PolicyWorld.Condition])] = []
        for member in members {
            guard let inner = expand(member.ref, path: path + [ref]) else { return nil }
            result += inner.map { ($0.code, $0.conditions + (member.when.map { [$0] } ?? [])) }
        }
        return result
    }

    func within(_ code: String, _ area: String) -> Bool {
        var current: String? = code
        while let next = current {
            if next == area { return true }
            current = world.parents[next] ?? nil
        }
        return false
    }

    /// Windows in local time: `from > to` runs past midnight and belongs to the day it starts on; `from == to` is the
    /// whole day.
    func isOpen(_ windows: [PolicyWorld.Window], _ zone: TimeZone, _ time: Date) -> Bool {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = zone
        let parts = calendar.dateComponents([.weekday, .hour, .minute], from: time)
        let minute = parts.hour! * 60 + parts.minute!
        let days: [Weekday] = [.sun, .mon, .tue, .wed, .thu, .fri, .sat]
        let today = days[parts.weekday! - 1]
        let yesterday = days[(parts.weekday! + 5) % 7]
        return windows.contains { window in
            func on(_ day: Weekday) -> Bool { window.days?.contains(day) ?? true }
            if window.from == window.to { return on(today) }
            if window.from < window.to { return on(today) && window.from <= minute && minute < window.to }
            return (on(today) && minute >= window.from) || (on(yesterday) && minute < window.to)
        }
    }
}
