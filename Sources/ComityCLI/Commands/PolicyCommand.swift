import ArgumentParser
import ComityAPI
import ComityClient
import ComityCore
import Foundation

/// `comity policy apply|diff|show|history`: the rule documents of the sovereignty engine.
struct PolicyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "policy",
        abstract: "Apply, compare and read rule documents (jurisdiction sets, datasets, donor and federation policies).",
        discussion: "Documents are YAML (one per file); their schema is docs/policy-schema.json, explained in docs/sovereignty.md.",
        subcommands: [Apply.self, Diff.self, Show.self, History.self],
        defaultSubcommand: Show.self
    )

    static func load(_ path: String) throws -> (JSONValue, String?) {
        let document = try JobFile.load(path)
        let source = path == "-" ? nil : try? String(contentsOfFile: path, encoding: .utf8)
        return (document, source)
    }

    struct Apply: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Validate and apply a rule document as a new version.",
            discussion: """
                Takes effect at once (or at its effective_from): queued jobs are re-evaluated, running jobs that a data, \
                export or federation rule now forbids are stopped and requeued, running guests that only a donation \
                policy now excludes are preempted after the donor's grace. --dry-run lists those jobs and changes nothing.
                """
        )

        @Argument(help: ArgumentHelp("The YAML document (- for standard input).", valueName: "file"))
        var file: String

        @Flag(name: .customLong("dry-run"), help: "Validate and list the jobs it would block, stop or unblock; change nothing.")
        var dryRun = false

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func run() async throws {
            let (document, source) = try PolicyCommand.load(file)
            let result = try await global.client().applyPolicy(PolicyApplyRequest(document: document, source: source, dryRun: dryRun))
            if global.isJSON { return try Terminal.json(result) }
            PolicyCommand.print(result)
        }
    }

    struct Diff: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Compare a rule document with the version in force, and list the jobs it would affect (changes nothing)."
        )

        @Argument(help: ArgumentHelp("The YAML document (- for standard input).", valueName: "file"))
        var file: String

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func run() async throws {
            let (document, source) = try PolicyCommand.load(file)
            let result = try await global.client().applyPolicy(PolicyApplyRequest(document: document, source: source, dryRun: true))
            if global.isJSON { return try Terminal.json(result) }
            let before = Set(PolicyCommand.flatten(result.previous ?? .null))
            let after = Set(PolicyCommand.flatten(result.document))
            Terminal.out(result.previous == nil ? "\(result.kind.rawValue)/\(result.name): new" : "\(result.kind.rawValue)/\(result.name): v\(result.version - 1) → v\(result.version)")
            for line in before.subtracting(after).sorted() { Terminal.out("- " + line) }
            for line in after.subtracting(before).sorted() { Terminal.out("+ " + line) }
            if before == after { Terminal.out("  (no change in the document)") }
            PolicyCommand.printImpact(result.impact, dryRun: true)
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the latest version of every rule document, or show one.")

        @Argument(help: ArgumentHelp("KIND/NAME, e.g. dataset/ke-health, to print one document.", valueName: "kind/name"))
        var rule: String?

        @Option(help: ArgumentHelp("Only documents of this kind.", valueName: "kind"))
        var kind: PolicyKind?

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func run() async throws {
            let client = try global.client()
            if let rule {
                let (kind, name) = try PolicyCommand.split(rule)
                guard let latest = try await client.policyHistory(kind: kind, name: name).last else { return }
                if global.isJSON { return try Terminal.json(latest) }
                Terminal.out("# \(latest.kind.rawValue)/\(latest.name) v\(latest.version), effective \(TimeText.local(latest.effectiveFrom)), applied by \(latest.appliedBy)")
                Terminal.outRaw(latest.source ?? PolicyCommand.flatten(latest.document).joined(separator: "\n") + "\n")
                return
            }
            let policies = try await client.policies(kind: kind)
            if global.isJSON { return try Terminal.json(PolicyList(policies: policies)) }
            var table = Table("KIND", "NAME", "VERSION", "EFFECTIVE", "APPLIED BY", "REASON")
            for policy in policies {
                table.append(policy.kind.rawValue, policy.name, "v\(policy.version)", TimeText.local(policy.effectiveFrom), policy.appliedBy, policy.reason ?? "")
            }
            table.print(empty: "no rules")
        }
    }

    struct History: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every applied version of one rule document.")

        @Argument(help: ArgumentHelp("KIND/NAME, e.g. donor-policy/uon.", valueName: "kind/name"))
        var rule: String

        @OptionGroup(title: "Global Options")
        var global: GlobalOptions

        func run() async throws {
            let (kind, name) = try PolicyCommand.split(rule)
            let versions = try await global.client().policyHistory(kind: kind, name: name)
            if global.isJSON { return try Terminal.json(PolicyList(policies: versions)) }
            var table = Table("VERSION", "EFFECTIVE", "APPLIED", "BY", "REASON")
            for version in versions {
                table.append(
                    "v\(version.version)", TimeText.local(version.effectiveFrom), TimeText.local(version.appliedAt), version.appliedBy,
                    version.reason ?? version.producedByJob.map { "output of job \($0)" } ?? "")
            }
            table.print(empty: "no versions")
        }
    }

    static func split(_ text: String) throws -> (PolicyKind, String) {
        let parts = text.split(separator: "/", maxSplits: 1).map(String.init)
        guard parts.count == 2, let kind = PolicyKind(rawValue: parts[0]) else {
            throw ValidationError("expected KIND/NAME with KIND one of \(PolicyKind.allCases.map(\.rawValue).joined(separator: ", ")), got \"\(text)\"")
        }
        return (kind, parts[1])
    }

    /// `residency.allow[0]: KE`, one line per scalar, for diffs.
    static func flatten(_ value: JSONValue, path: String = "") -> [String] {
        switch value {
        case .object(let entries):
            return entries.keys.sorted().flatMap { flatten(entries[$0]!, path: path.isEmpty ? $0 : "\(path).\($0)") }
        case .array(let items):
            return items.enumerated().flatMap { flatten($1, path: "\(path)[\($0)]") }
        case .null: return path.isEmpty ? [] : ["\(path): null"]
        case .bool(let flag): return ["\(path): \(flag)"]
        case .number(let number): return ["\(path): \(number.rounded() == number ? String(Int64(number)) : String(number))"]
        case .string(let text): return ["\(path): \(text)"]
        }
    }

    static func print(_ result: PolicyApplyResult) {
        let when = result.effectiveFrom > Date().addingTimeInterval(5) ? "effective \(TimeText.local(result.effectiveFrom))" : "effective now"
        Terminal.out("\(result.applied ? "applied" : "would apply") \(result.kind.rawValue)/\(result.name) v\(result.version) (\(when))")
        printImpact(result.impact, dryRun: !result.applied)
    }

    static func printImpact(_ impact: PolicyImpact, dryRun: Bool) {
        let grace = impact.graceSeconds.map { " (grace \(ActivePolicies.duration(TimeInterval($0))))" } ?? ""
        Terminal.out(
            "impact: \(impact.stopped.count) \(dryRun ? "to stop" : "stopped") at once, \(impact.preempted.count) \(dryRun ? "to preempt" : "preempted") after the donor's grace\(grace), "
                + "\(impact.newlyBlocked.count) queued newly blocked, \(impact.unblocked.count) unblocked")
        for (label, jobs) in [("stop", impact.stopped), ("preempt", impact.preempted), ("blocked", impact.newlyBlocked), ("unblocked", impact.unblocked)] {
            for job in jobs {
                let host = job.host.map { " on \($0)" } ?? ""
                let reasons = job.reasons.isEmpty ? "" : ": " + job.reasons.joined(separator: ", ")
                Terminal.out("  \(label.padding(toLength: 9, withPad: " ", startingAt: 0)) \(job.id) \(job.name) (\(job.project))\(host)\(reasons)")
            }
        }
    }
}

extension PolicyKind: ExpressibleByArgument {}
