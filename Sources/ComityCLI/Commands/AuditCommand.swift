import ArgumentParser
import ComityAPI
import ComityClient
import ComityCore
import Crypto
import Foundation

/// `comity audit verify|log|placement|export|checkpoint`: the auditor's tools.
struct AuditCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "audit",
        abstract: "Verify, read and export the tamper-evident audit ledger, and keep its signed checkpoints.",
        discussion: """
            Admins and auditors read every entry; a partner admin reads the entries that concern its partner and verifies \
            the chain of all entries by their hashes. docs/audit.md defines the entries, hashes and checkpoint format.
            """,
        subcommands: [Verify.self, Log.self, Placement.self, Export.self, Checkpoint.self],
        defaultSubcommand: Log.self
    )

    /// Filters shared by `log` and `export`.
    struct Filters: ParsableArguments {
        @Option(help: ArgumentHelp("Entries of this job.", valueName: "id")) var job: Int64?
        @Option(help: ArgumentHelp("Entries of this host (name or id).", valueName: "host")) var host: String?
        @Option(help: ArgumentHelp("Entries about jobs reading this dataset.", valueName: "name")) var dataset: String?
        @Option(help: ArgumentHelp("Entries concerning this partner.", valueName: "name")) var partner: String?
        @Option(help: ArgumentHelp("Entries in this region.", valueName: "name")) var region: String?
        @Option(help: ArgumentHelp("From this time (ISO 8601, or a date).", valueName: "time")) var since: String?
        @Option(help: ArgumentHelp("Before this time.", valueName: "time")) var until: String?
        @Option(help: ArgumentHelp("Entries of this kind (submitted, placed, started, ended, lost, policy-stop, rule-applied, host-enrolled, denied, …).", valueName: "kind"))
        var kind: String?

        func query(_ client: ComityClient) async throws -> [String: String] {
            var query: [String: String] = [:]
            if let job { query["job"] = String(job) }
            if let host {
                if let id = Int64(host) {
                    query["host"] = String(id)
                } else {
                    guard let found = try await client.hosts().first(where: { $0.name == host }) else {
                        throw CommandFailure(message: "--host: no host named \(host)", exitCode: ExitStatus.notFound)
                    }
                    query["host"] = String(found.id)
                }
            }
            for (key, value) in [("dataset", dataset), ("partner", partner), ("region", region), ("since", since), ("until", until), ("kind", kind)] {
                if let value { query[key] = value }
            }
            return query
        }
    }

    static func pages(_ client: ComityClient, query: [String: String], page: Int = 5_000, _ body: ([AuditEntry]) throws -> Void) async throws {
        var after: Int64 = 0
        while true {
            let entries = try await client.auditEntries(after: after, limit: page, query: query)
            try body(entries)
            guard let last = entries.last, entries.count == page else { return }
            after = last.seq
        }
    }

    static func summary(_ entry: AuditEntry) -> String {
        guard let data = entry.body.data(using: .utf8), case .object(let body)? = try? JSONDecoder().decode(JSONValue.self, from: data) else {
            return entry.body
        }
        return body.keys.sorted().compactMap { key in
            switch body[key]! {
            case .null: nil
            case .string(let text): "\(key)=\(text)"
            case .number(let number): "\(key)=\(number.rounded() == number ? String(Int64(number)) : String(number))"
            case .bool(let flag): "\(key)=\(flag)"
            case .array(let items): "\(key)=[\(items.count)]"
            case .object: "\(key)={…}"
            }
        }.joined(separator: " ")
    }

    struct Log: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List ledger entries, oldest first.")

        @OptionGroup var filters: Filters
        @Option(help: "At most this many entries.") var limit: Int = 200
        @OptionGroup(title: "Global Options") var global: GlobalOptions

        func run() async throws {
            let client = try global.client()
            let entries = try await client.auditEntries(after: 0, limit: limit, query: try await filters.query(client))
            if global.isJSON { return try Terminal.json(AuditEntryList(entries: entries)) }
            var table = Table("SEQ", "TIME", "KIND", "ACTOR", "JOB", "HOST", "PARTNERS", "REGION", "RULES", "DETAIL")
            for entry in entries {
                table.append(
                    String(entry.seq), TimeText.local(entry.at), entry.kind, entry.actor, entry.jobId.map(String.init) ?? "",
                    entry.hostId.map(String.init) ?? "", entry.partners.joined(separator: ","), entry.region, entry.policy,
                    AuditCommand.summary(entry))
            }
            table.print(empty: "no entries")
        }
    }

    struct Placement: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Where each attempt of a job ran, and under which rules, as recorded.")

        @Argument(help: ArgumentHelp("The job id.", valueName: "job")) var job: Int64
        @OptionGroup(title: "Global Options") var global: GlobalOptions

        func run() async throws {
            let client = try global.client()
            var entries: [AuditEntry] = []
            try await AuditCommand.pages(client, query: ["job": String(job)]) { entries += $0 }
            if global.isJSON { return try Terminal.json(AuditEntryList(entries: entries)) }
            guard !entries.isEmpty else { throw CommandFailure(message: "no ledger entries for job \(job)", exitCode: ExitStatus.notFound) }
            let hosts = Dictionary(uniqueKeysWithValues: ((try? await client.hosts()) ?? []).map { ($0.id, $0.name) })
            for entry in entries {
                let host = entry.hostId.map { " on \(hosts[$0] ?? "host \($0)") (\(entry.region))" } ?? ""
                let rules = entry.policy.isEmpty ? "" : " under rules \(entry.policy)"
                Terminal.out("#\(entry.seq) \(TimeText.local(entry.at)) \(entry.kind)\(host)\(rules) by \(entry.actor): \(AuditCommand.summary(entry))")
            }
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write every matching entry as CSV or JSON lines to standard output.")

        enum Format: String, ExpressibleByArgument, CaseIterable { case csv, jsonl }

        @Option(help: "csv or jsonl.") var format: Format = .jsonl
        @OptionGroup var filters: Filters
        @OptionGroup(title: "Global Options") var global: GlobalOptions

        static func csv(_ field: String) -> String {
            field.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) ? "\"" + field.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : field
        }

        func run() async throws {
            let client = try global.client()
            if format == .csv { Terminal.out("seq,at,kind,actor,job_id,host_id,partners,region,datasets,policy,body,leaf,hash") }
            try await AuditCommand.pages(client, query: try await filters.query(client)) { entries in
                for entry in entries {
                    switch format {
                    case .jsonl:
                        try Terminal.jsonLine(entry)
                    case .csv:
                        let fields = [
                            String(entry.seq), WireJSON.format(entry.at), entry.kind, entry.actor, entry.jobId.map(String.init) ?? "",
                            entry.hostId.map(String.init) ?? "", entry.partners.joined(separator: ";"), entry.region, entry.datasets.joined(separator: ";"),
                            entry.policy, entry.body, entry.leaf, entry.hash,
                        ]
                        Terminal.out(fields.map(Export.csv).joined(separator: ","))
                    }
                }
            }
        }
    }

    struct Checkpoint: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Fetch the ledger's signed checkpoint (the server signs its head now if it moved); --save keeps it.",
            discussion: """
                --save DIR writes DIR/checkpoint-<size>.txt and, the first time, DIR/verifier.key (the signing key as it is \
                today). Later saves check the checkpoint against the kept key, so a server that changed its key is caught.
                """
        )

        @Option(help: ArgumentHelp("Keep the checkpoint in this folder.", valueName: "dir")) var save: String?
        @OptionGroup(title: "Global Options") var global: GlobalOptions

        func run() async throws {
            let view = try await global.client().auditCheckpoint()
            if let save {
                try FileManager.default.createDirectory(atPath: save, withIntermediateDirectories: true)
                let keyPath = save + "/verifier.key"
                let keyText = (try? String(contentsOfFile: keyPath, encoding: .utf8)) ?? view.verifierKey
                guard let (name, key) = AuditCheckpoint.parseVerifierKey(keyText) else {
                    throw CommandFailure(message: "\(keyPath) does not hold a verifier key")
                }
                do {
                    _ = try AuditCheckpoint.open(view.text, key: key, name: name)
                } catch {
                    throw CommandFailure(message: "the server's checkpoint does not verify with the kept key \(keyPath): \(error)")
                }
                if !FileManager.default.fileExists(atPath: keyPath) { try (view.verifierKey + "\n").write(toFile: keyPath, atomically: true, encoding: .utf8) }
                try view.text.write(toFile: save + "/checkpoint-\(view.size).txt", atomically: true, encoding: .utf8)
            }
            if global.isJSON { return try Terminal.json(view) }
            Terminal.outRaw(view.text)
            if let save { Terminal.out("saved \(save)/checkpoint-\(view.size).txt") }
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Recompute the ledger's chain and prove it extends every checkpoint kept in a folder.",
            discussion: """
                Admins and auditors recompute every entry's hash from its content; a partner admin checks the chain of \
                hashes (and the content of the entries it may read through log/export). On damage: the first bad sequence \
                number and the kind (modified, missing, reordered, rewritten), and exit status 1.
                """
        )

        @Option(help: ArgumentHelp("A folder of checkpoints kept with `audit checkpoint --save`.", valueName: "dir")) var against: String?
        @Option(help: "Entries per request.") var page: Int = 10_000
        @OptionGroup(title: "Global Options") var global: GlobalOptions

        func run() async throws {
            let started = ContinuousClock.now
            let client = try global.client()
            var roots: [Int64: [UInt8]] = [:]
            if let against {
                let keyPath = against + "/verifier.key"
                guard let keyText = try? String(contentsOfFile: keyPath, encoding: .utf8), let (name, key) = AuditCheckpoint.parseVerifierKey(keyText) else {
                    throw CommandFailure(message: "\(keyPath): missing or not a verifier key (keep checkpoints with `comity audit checkpoint --save \(against)`)")
                }
                let files = try FileManager.default.contentsOfDirectory(atPath: against).filter { $0.hasPrefix("checkpoint-") && $0.hasSuffix(".txt") }
                for file in files.sorted() {
                    let text = try String(contentsOfFile: against + "/" + file, encoding: .utf8)
                    do {
                        let checkpoint = try AuditCheckpoint.open(text, key: key, name: name)
                        roots[checkpoint.size] = checkpoint.root
                    } catch {
                        throw CommandFailure(message: "\(against)/\(file): \(error)")
                    }
                }
            }
            // The server's own latest signed head must be on the chain too.
            let current = try await client.auditCheckpoint()
            var verifier = AuditVerifier(checkpoints: roots.merging([current.size: Hex.decode(current.root) ?? []]) { saved, _ in saved })
            let role = try await client.whoami().role
            var after: Int64 = 0
            pages: while true {
                if role == .partnerAdmin {
                    let links = try await client.auditChain(after: after, limit: page)
                    for link in links {
                        let entry = AuditEntry(seq: link.seq, atMicros: 0, kind: "", leaf: link.leaf, hash: link.hash)
                        guard verifier.feed(entry, redacted: true) else { break pages }
                    }
                    guard let last = links.last, links.count == page else { break }
                    after = last.seq
                } else {
                    let entries = try await client.auditEntries(after: after, limit: page)
                    for entry in entries { guard verifier.feed(entry) else { break pages } }
                    guard let last = entries.last, entries.count == page else { break }
                    after = last.seq
                }
            }
            let damage = verifier.finish()
            let elapsed = ContinuousClock.now - started
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            let mode = role == .partnerAdmin ? "chain of hashes" : "every entry's content and hash"
            if global.isJSON {
                var result: [String: JSONValue] = [
                    "ok": .bool(damage == nil), "checked": .number(Double(verifier.checked)), "seconds": .number(seconds),
                    "checkpoints": .number(Double(roots.count)),
                ]
                if let damage {
                    result["damage"] = .object(["kind": .string(damage.kind.rawValue), "seq": .number(Double(damage.seq)), "detail": .string(damage.detail)])
                }
                try Terminal.json(JSONValue.object(result))
                if damage != nil { throw ExitCode(ExitStatus.failure) }
                return
            }
            if let damage {
                throw CommandFailure(
                    message: "the ledger is damaged: \(damage.kind.rawValue) at seq \(damage.seq): \(damage.detail)",
                    details: ["  (\(verifier.checked) entries verified before it, \(String(format: "%.2f", seconds)) s)"])
            }
            let kept = roots.isEmpty ? "" : "; it extends all \(roots.count) kept checkpoint\(roots.count == 1 ? "" : "s") (largest: \(roots.keys.max()!))"
            Terminal.out("ok: \(verifier.checked) entries verified (\(mode)) in \(String(format: "%.2f", seconds)) s\(kept); signed head \(current.size)")
        }
    }
}
