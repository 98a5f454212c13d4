import Foundation

extension PolicySnapshot {
    /// Names known to any version (effective or announced) of a kind of document.
    func names(_ kind: PolicyKind) -> Set<String> { Set(versions.keys.filter { $0.kind == kind }.map(\.name)) }

    /// Write-time checks of what a document refers to: unknown jurisdictions, sets, partners, projects, datasets and
    /// export classes are errors naming the field, with a suggestion where one is close; so is a set that would
    /// contain itself. An empty list means the document may be applied.
    public func referenceErrors(_ document: PolicyDocument) -> [FieldError] {
        var errors: [FieldError] = []
        let sets = names(.jurisdictionSet).union(document.kind == .jurisdictionSet ? [document.name] : [])
        let areas = Set(facts.jurisdictions.keys).union(sets)
        let partners = Set(facts.partners.keys)
        let projects = Set(facts.projects.keys)
        let datasets = names(.dataset)

        func check(_ value: String, in known: Set<String>, field: String, what: String) {
            guard !known.contains(value) else { return }
            let hint = Suggestion.closest(to: value, among: known).map { "; did you mean \($0)?" } ?? ""
            errors.append(FieldError(field: field, message: "unknown \(what) \(value)\(hint)"))
        }
        func areasCheck(_ refs: [String]?, field: String) {
            for (index, ref) in (refs ?? []).enumerated() { check(ref, in: areas, field: "\(field)[\(index)]", what: "jurisdiction or set") }
        }
        func matchCheck(_ match: JobMatch, field: String) {
            for (index, partner) in (match.partners ?? []).enumerated() { check(partner, in: partners, field: "\(field).partners[\(index)]", what: "partner") }
            for (index, project) in (match.projects ?? []).enumerated() { check(project, in: projects, field: "\(field).projects[\(index)]", what: "project") }
        }

        switch document.body {
        case .jurisdictionSet(let rule):
            if facts.jurisdictions[document.name] != nil {
                errors.append(FieldError(field: "name", message: "\(document.name) is a jurisdiction code; a set needs a name of its own"))
            }
            areasCheck(rule.members.map(\.ref), field: "members")
            if errors.isEmpty {
                // Would the set, as written, contain itself?
                var trial = versions.values.flatMap { $0 }.filter { $0.document.key != document.key }
                trial.append(PolicyVersion(document: document, version: Int.max, effectiveFrom: .distantPast))
                let active = PolicySnapshot(facts: facts, versions: trial).active(at: .distantFuture)
                if case .failure(let error)? = active.expandedSets[document.name] {
                    errors.append(FieldError(field: "members", message: error.message))
                }
            }
        case .dataset(let rule):
            check(rule.steward, in: partners, field: "steward", what: "partner")
            areasCheck(rule.residency.allow, field: "residency.allow")
            areasCheck(rule.residency.deny, field: "residency.deny")
            for (index, partner) in (rule.residency.partners ?? []).enumerated() {
                check(partner, in: partners, field: "residency.partners[\(index)]", what: "partner")
            }
            for (index, partner) in (rule.use.partners ?? []).enumerated() { check(partner, in: partners, field: "use.partners[\(index)]", what: "partner") }
            for (index, project) in (rule.use.projects ?? []).enumerated() { check(project, in: projects, field: "use.projects[\(index)]", what: "project") }
            if let exportClass = rule.exportClass {
                let classes = Set(versions.values.flatMap { $0 }.flatMap { version -> [String] in
                    if case .federation(let policy) = version.document.body { return Array(policy.exportClasses.keys) }
                    return []
                })
                check(exportClass, in: classes, field: "export_class", what: "export class")
            }
            for (index, inheritance) in rule.derivedFrom.enumerated() {
                check(inheritance.source, in: datasets, field: "derived_from[\(index)].source", what: "dataset")
                if inheritance.source == document.name {
                    errors.append(FieldError(field: "derived_from[\(index)].source", message: "a dataset cannot be derived from itself"))
                }
            }
        case .donorPolicy(let policy):
            check(document.name, in: partners, field: "name", what: "partner")
            for (index, rule) in policy.permit.enumerated() { matchCheck(rule.match, field: "permit[\(index)]") }
            for (index, rule) in policy.forbid.enumerated() { matchCheck(rule.match, field: "forbid[\(index)]") }
        case .federation(let policy):
            for (index, rule) in policy.forbid.enumerated() {
                matchCheck(rule.match, field: "forbid[\(index)]")
                areasCheck(rule.jurisdictions, field: "forbid[\(index)].jurisdictions")
            }
            for (name, refs) in policy.exportClasses.sorted(by: { $0.key < $1.key }) { areasCheck(refs, field: "export_classes.\(name)") }
        }
        return errors
    }
}

/// Why a host cannot take a job for want of resources: it never could (`CPU`, `MEMORY`, `GPU_MODEL`,
/// `GPU_MEMORY`, `GPU_COUNT`) or not now (`BUSY`).
public enum CapacityCheck {
    public static func reasons(_ request: ResourceRequest, total: HostResources, free: HostAvailability?) -> [Reason] {
        var reasons: [Reason] = []
        if total.cpuMillis < request.cpuMillis {
            reasons.append(Reason(.cpu, category: .capacity, detail: "needs \(Double(request.cpuMillis) / 1000) CPUs; the host has \(Double(total.cpuMillis) / 1000)"))
        }
        if total.memoryBytes < request.memoryBytes {
            reasons.append(Reason(.memory, category: .capacity, detail: "needs \(Quantity.formatBytes(request.memoryBytes)) of memory; the host has \(Quantity.formatBytes(total.memoryBytes))",
                                  brief: "needs \(Quantity.formatBytes(request.memoryBytes))"))
        }
        if request.gpus > 0 {
            let byModel = total.gpus.filter { gpu in request.gpuModel.map { gpu.model.lowercased().contains($0.lowercased()) } ?? true }
            let byMemory = byModel.filter { gpu in request.gpuMemoryBytes.map { gpu.memoryBytes >= $0 } ?? true }
            if let model = request.gpuModel, byModel.isEmpty, !total.gpus.isEmpty {
                reasons.append(Reason(.gpuModel, category: .capacity, detail: "needs \(model) GPUs; the host has \(Set(total.gpus.map(\.model)).sorted().joined(separator: ", "))",
                                      brief: "needs \(model)"))
            } else if let memory = request.gpuMemoryBytes, byMemory.isEmpty, !byModel.isEmpty {
                reasons.append(Reason(.gpuMemory, category: .capacity, detail: "needs \(Quantity.formatBytes(memory)) per GPU; the host's have \(Quantity.formatBytes(byModel.map(\.memoryBytes).max() ?? 0))",
                                      brief: "needs \(Quantity.formatBytes(memory))"))
            } else if byMemory.count < request.gpus {
                reasons.append(Reason(.gpuCount, category: .capacity, detail: "needs \(request.gpus) matching GPUs on one host; the host has \(byMemory.count)",
                                      brief: "needs \(request.gpus)"))
            }
        }
        if reasons.isEmpty, let free, Placer.fit(request, on: free) == nil {
            reasons.append(Reason(.busy, category: .capacity, detail: "enough in all, but not free now: \(free.freeGPUs.count) GPUs, \(Double(free.freeCPUMillis) / 1000) CPUs, \(Quantity.formatBytes(free.freeMemoryBytes)) free"))
        }
        return reasons
    }
}

/// The summary line and the nearest way out, from each host's reasons.
public enum ExplanationText {
    /// `0/12 hosts eligible: 8 RESIDENCY(ke-health: KE only), 3 DONOR_WINDOW(uon#evenings: …), 1 GPU_MEMORY(needs 80Gi)`.
    /// A host counts once under each distinct reason it has.
    public static func summary(_ hosts: [[Reason]]) -> String {
        let eligible = hosts.filter(\.isEmpty).count
        var counts: [String: Int] = [:]
        var order: [String] = []
        for reasons in hosts {
            var seen: Set<String> = []
            for reason in reasons where seen.insert(reason.summaryLabel).inserted {
                if counts[reason.summaryLabel] == nil { order.append(reason.summaryLabel) }
                counts[reason.summaryLabel, default: 0] += 1
            }
        }
        let parts = order.sorted { (counts[$0]!, $1) > (counts[$1]!, $0) }.map { "\(counts[$0]!) \($0)" }
        let head = "\(eligible)/\(hosts.count) hosts eligible"
        return parts.isEmpty ? head : head + ": " + parts.joined(separator: ", ")
    }

    /// Single changes that would make hosts eligible: hosts whose only obstacle is one dataset's residency, one
    /// donor window, or their runner (not the sandbox).
    public static func waysOut(_ hosts: [(jurisdiction: String, reasons: [Reason])]) -> [String] {
        var residency: [String: (count: Int, jurisdictions: Set<String>)] = [:]
        var windows: [String: Int] = [:]
        var sandbox = 0
        for (jurisdiction, reasons) in hosts where !reasons.isEmpty {
            let labels = Set(reasons.map(\.label))
            guard labels.count == 1, let reason = reasons.first, let subject = reason.subject else { continue }
            switch reason.code {
            case .residency:
                residency[subject, default: (0, [])].count += 1
                residency[subject]!.jurisdictions.insert(jurisdiction)
            case .donorWindow:
                windows[reason.detail, default: 0] += 1
            case .sandboxRequired:
                sandbox += 1
            default: break
            }
        }
        var ways = residency.sorted { ($0.value.count, $1.key) > ($1.value.count, $0.key) }.map { subject, value in
            "would be eligible on \(value.count) host\(value.count == 1 ? "" : "s") if \(subject) allowed \(value.jurisdictions.sorted().joined(separator: ", "))"
        }
        ways += windows.sorted { $0.value > $1.value }.map { detail, count in
            "\(count) host\(count == 1 ? "" : "s") would be eligible inside the donor's window: \(detail)"
        }
        if sandbox > 0 {
            ways.append(
                "would be eligible on \(sandbox) host\(sandbox == 1 ? "" : "s") if \(sandbox == 1 ? "it ran" : "they ran") jobs in the sandbox "
                    + "(comity-agent --runner sandbox)")
        }
        return ways
    }
}
