import ArgumentParser
import ComityCore
import Foundation

/// `comity-bench report`: merges the phases' JSON files, derives the ratio, prints the table.
struct ReportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Merge phase results (JSON files and --set values), print the table, write the combined JSON.",
        discussion: """
            Later files and --set values win over earlier ones; "notes" lists are concatenated. Adds \
            lifecycle_vs_pgbench_16 = lifecycle_jobs_per_s / pgbench_tps_16 when both are present.
            """
    )

    @Argument(help: "JSON objects written by the other subcommands.")
    var files: [String] = []

    @Option(name: .customLong("set"), help: "key=value to add (a number when it parses as one).")
    var values: [String] = []

    @Option(help: "Write the combined JSON here.")
    var out: String?

    func run() throws {
        var merged: [String: JSONValue] = [:]
        var notes: [JSONValue] = []
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else { throw BenchError("cannot read \(file)") }
            guard case .object(let object) = try JSONDecoder().decode(JSONValue.self, from: data) else {
                throw BenchError("\(file) does not hold a JSON object")
            }
            for (key, value) in object {
                if key == "notes", case .array(let list) = value { notes += list } else { merged[key] = value }
            }
        }
        for entry in values {
            guard let equals = entry.firstIndex(of: "=") else { throw ValidationError("--set: expected key=value, got \(entry)") }
            let key = String(entry[..<equals])
            let text = String(entry[entry.index(after: equals)...])
            if key == "note" {
                notes.append(.string(text))
            } else if !Table.textKeys.contains(key), let number = Double(text), !text.isEmpty {
                merged[key] = .number(number)
            } else {
                merged[key] = .string(text)
            }
        }
        if case .number(let lifecycle)? = merged["lifecycle_jobs_per_s"], case .number(let tps)? = merged["pgbench_tps_16"], tps > 0 {
            merged["lifecycle_vs_pgbench_16"] = .number((lifecycle / tps * 1000).rounded() / 1000)
        }
        if !notes.isEmpty { merged["notes"] = .array(notes) }
        if let out {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
            try encoder.encode(JSONValue.object(merged)).write(to: URL(fileURLWithPath: out))
        }
        print(Table(merged).render())
    }
}

/// The human table of one benchmark run.
struct Table {
    let values: [String: JSONValue]

    init(_ values: [String: JSONValue]) { self.values = values }

    func number(_ key: String) -> Double? {
        if case .number(let value)? = values[key] { return value }
        return nil
    }

    /// `--set` values kept as text even when they look like numbers (a short commit hash can be all digits).
    static let textKeys: Set<String> = ["git", "mode", "machine", "started_at", "pg_version"]

    func string(_ key: String) -> String? {
        if case .string(let value)? = values[key] { return value }
        return nil
    }

    func object(_ key: String) -> [String: JSONValue] {
        if case .object(let value)? = values[key] { return value }
        return [:]
    }

    static func format(_ value: Double?) -> String {
        guard let value, value.isFinite else { return "–" }
        if abs(value) >= 100 { return String(Int(value.rounded())) }
        if abs(value) >= 10 { return String(format: "%.1f", value) }
        return String(format: "%.2f", value)
    }

    /// "met", "MISS" or "" (no figure or no target).
    static func verdict(_ value: Double?, atLeast floor: Double? = nil, atMost ceiling: Double? = nil) -> String {
        guard let value, value.isFinite else { return "" }
        if let floor { return value >= floor ? "met" : "MISS" }
        if let ceiling { return value <= ceiling ? "met" : "MISS" }
        return ""
    }

    func render() -> String {
        var rows: [[String]] = [["figure", "measured", "target", ""]]
        func f(_ key: String) -> String { Self.format(number(key)) }
        let jobs = number("lifecycle_jobs").map { String(Int($0)) } ?? "?"
        let hosts = number("lifecycle_hosts").map { String(Int($0)) } ?? "?"
        rows.append([
            "lifecycle throughput (\(jobs) no-op jobs, \(hosts) hosts)", "\(f("lifecycle_jobs_per_s")) jobs/s", "≥ 2,000",
            Self.verdict(number("lifecycle_jobs_per_s"), atLeast: 2000),
        ])
        rows.append(["  submissions (arrays of 5,000)", "\(f("submit_jobs_per_s")) jobs/s", "", ""])
        rows.append(["  placements, end to end", "\(f("placements_per_s")) jobs/s", "", ""])
        rows.append(["  lifecycle wall time", "\(f("lifecycle_seconds")) s", "", ""])
        let passKey = string("placements_per_s_in_pass_at") ?? "?"
        rows.append([
            "placements inside a pass (\(passKey))", "\(f("placements_per_s_in_pass"))/s", "≥ 20,000",
            Self.verdict(number("placements_per_s_in_pass"), atLeast: 20000),
        ])
        let dispatchOK = (number("dispatch_p50_ms").map { $0 <= 5 } ?? false) && (number("dispatch_p99_ms").map { $0 <= 25 } ?? false)
        rows.append([
            "dispatch, submit returned → agent has it (p50/p95/p99/max)",
            "\(f("dispatch_p50_ms")) / \(f("dispatch_p95_ms")) / \(f("dispatch_p99_ms")) / \(f("dispatch_max_ms")) ms",
            "p50 ≤ 5, p99 ≤ 25", number("dispatch_p50_ms") == nil ? "" : (dispatchOK ? "met" : "MISS"),
        ])
        rows.append([
            "  from submit request start (p50/p95/p99/max)",
            "\(f("dispatch_from_request_p50_ms")) / \(f("dispatch_from_request_p95_ms")) / \(f("dispatch_from_request_p99_ms")) / \(f("dispatch_from_request_max_ms")) ms",
            "", "",
        ])
        rows.append([
            "  submit returned → start acknowledged (p50/p95/p99/max)",
            "\(f("dispatch_start_p50_ms")) / \(f("dispatch_start_p95_ms")) / \(f("dispatch_start_p99_ms")) / \(f("dispatch_start_max_ms")) ms",
            "", "",
        ])
        rows.append([
            "  submit request round trip (p50/p99)", "\(f("dispatch_submit_p50_ms")) / \(f("dispatch_submit_p99_ms")) ms", "", "",
        ])
        let passes = object("pass_ms")
        if case .number(let target)? = passes["100000x10000"] {
            rows.append(["pass time, 100,000 queued × 10,000 hosts", "\(Self.format(target)) ms", "≤ 50", Self.verdict(target, atMost: 50)])
        } else if let largest = largestPassKey(passes), case .number(let value)? = passes[largest] {
            rows.append(["pass time, \(largest) (largest measured)", "\(Self.format(value)) ms", "≤ 50 at 100000x10000", ""])
        }
        let decisions = object("rules_per_decision_us")
        if let largest = largestPassKey(decisions), case .number(let value)? = decisions[largest] {
            rows.append(["sovereignty: eligibility + placement per decision (\(largest) datasets×hosts)", "\(Self.format(value)) µs", "", ""])
            rows.append(["  one uncached (job, host) evaluation", "\(f("rules_eval_uncached_us")) µs", "", ""])
        }
        let sharing = object("sharing_pass_ms")
        if let key = largestPassKey(sharing), case .number(let value)? = sharing[key] {
            rows.append([
                "fair-share pass, \(f("sharing_partners")) partners × \(f("sharing_projects")) projects, \(key)", "\(Self.format(value)) ms", "", "",
            ])
            if let key = largestPassKey(object("sharing_full_pool_pass_ms")), case .number(let full)? = object("sharing_full_pool_pass_ms")[key] {
                rows.append(["  the same with the pool full (plans reclaims)", "\(Self.format(full)) ms", "", ""])
            }
        }
        if let seconds = number("audit_verify_s_per_million") {
            rows.append(["audit ledger: verify one million entries", "\(Self.format(seconds)) s", "", ""])
        }
        let rssAt = string("server_rss_at") ?? ""
        rows.append([
            "server RSS\(rssAt.isEmpty ? "" : " (\(rssAt))")", "\(f("server_rss_mb")) MB", "≤ 300 at 10k hosts + 1M queued",
            rssAt.contains("1000000") ? Self.verdict(number("server_rss_mb"), atMost: 300) : "",
        ])
        if number("server_rss_lifecycle_mb") != nil {
            rows.append(["  server RSS after the lifecycle phase", "\(f("server_rss_lifecycle_mb")) MB", "", ""])
        }
        rows.append(["agent RSS, idle", "\(f("agent_rss_mb")) MB", "≤ 30", Self.verdict(number("agent_rss_mb"), atMost: 30)])
        if number("agent_rss_anon_mb") != nil {
            rows.append(["  of which its own (anonymous) / file pages (shared, reclaimable)", "\(f("agent_rss_anon_mb")) / \(f("agent_rss_file_mb")) MB", "", ""])
        }
        rows.append(["  agent RSS, running a job (max)", "\(f("agent_rss_running_mb")) MB", "", ""])
        rows.append(["pgbench UPDATE … RETURNING, 1 client", "\(f("pgbench_tps_1")) tps", "", ""])
        rows.append(["pgbench UPDATE … RETURNING, 16 clients", "\(f("pgbench_tps_16")) tps", "", ""])
        rows.append(["lifecycle jobs/s ÷ pgbench tps (16 clients)", Self.format(number("lifecycle_vs_pgbench_16")), "", ""])

        var text = ""
        if let mode = string("mode") { text += "Comity benchmark (\(mode))" }
        if let machine = string("machine") { text += " — \(machine)" }
        if let git = string("git") { text += " — commit \(git)" }
        if let seconds = number("bench_seconds") { text += " — \(Int(seconds)) s" }
        if !text.isEmpty { text += "\n\n" }
        text += Self.align(rows)
        if !passes.isEmpty { text += "\n\n" + passTable(passes) }
        let accounting = ["lifecycle", "dispatch"].compactMap(phaseAccount)
        if !accounting.isEmpty { text += "\n\nwhere the time went:\n" + accounting.joined(separator: "\n") }
        if case .object(let errors)? = values["agent_errors"], !errors.isEmpty {
            text += "\n\nsimulated agent errors: " + errors.sorted { $0.key < $1.key }.map { "\($0.key) ×\(Self.format(numberOf($0.value)))" }.joined(separator: ", ")
        }
        if case .array(let notes)? = values["notes"], !notes.isEmpty {
            text += "\n\nnotes:\n" + notes.compactMap { if case .string(let s) = $0 { "  - " + s } else { nil } }.joined(separator: "\n")
        }
        return text
    }

    /// One phase's CPU split and the server's account (passes, requests per route).
    func phaseAccount(_ phase: String) -> String? {
        let cpu = object("\(phase)_cpu")
        guard !cpu.isEmpty else { return nil }
        func c(_ key: String) -> String { Self.format(cpu[key].flatMap(numberOf)) }
        var text = "  \(phase): wall \(c("wall_s")) s; CPU s: server \(c("server_cpu_s")), postgres \(c("postgres_cpu_s")), "
            + "driver \(c("driver_cpu_s")), other processes \(c("other_cpu_s")) (machine busy \(c("machine_busy_cpu_s")) of \(c("machine_cpu_capacity_s")))"
        let server = object("\(phase)_server")
        if !server.isEmpty {
            func m(_ key: String) -> String { Self.format(server[key].flatMap(numberOf)) }
            text += "\n    scheduler: \(m("passes")) passes, \(m("pass_seconds")) s in passes (mean \(m("pass_mean_ms")) ms), \(m("placements")) placements"
            if case .object(let parts)? = server["pass_parts_mean_ms"], !parts.isEmpty {
                text += "\n    pass steps, mean ms: " + parts.sorted { $0.key < $1.key }.map { "\($0.key) \(Self.format(numberOf($0.value)))" }.joined(separator: ", ")
            }
            if case .object(let routes)? = server["routes"] {
                let lines = routes.compactMap { route, value -> (String, Double, String)? in
                    guard case .object(let r) = value, let total = r["total_s"].flatMap(numberOf) else { return nil }
                    return (route, total, "\(route) ×\(Self.format(r["count"].flatMap(numberOf))) mean \(Self.format(r["mean_ms"].flatMap(numberOf))) ms")
                }.sorted { $0.1 > $1.1 }
                if !lines.isEmpty { text += "\n    requests: " + lines.map(\.2).joined(separator: "; ") }
            }
        }
        return text
    }

    func numberOf(_ value: JSONValue) -> Double? {
        if case .number(let n) = value { return n }
        return nil
    }

    func largestPassKey(_ passes: [String: JSONValue]) -> String? {
        passes.keys.max { a, b in
            let pa = a.split(separator: "x").compactMap { Int($0) }
            let pb = b.split(separator: "x").compactMap { Int($0) }
            return pa.lexicographicallyPrecedes(pb)
        }
    }

    /// Pass time (and placements per second inside the pass) as a queued × hosts matrix.
    func passTable(_ passes: [String: JSONValue]) -> String {
        let keys = passes.keys.compactMap { key -> (Int, Int)? in
            let parts = key.split(separator: "x").compactMap { Int($0) }
            return parts.count == 2 ? (parts[0], parts[1]) : nil
        }
        let queued = Array(Set(keys.map(\.0))).sorted()
        let hosts = Array(Set(keys.map(\.1))).sorted()
        let rates = object("pass_placements_per_s")
        let placed = object("pass_placed")
        var rows: [[String]] = [["pass ms (placed, placements/s) — queued ↓ hosts →"] + hosts.map { String($0) }]
        for q in queued {
            var row = [String(q)]
            for h in hosts {
                let key = "\(q)x\(h)"
                guard let ms = passes[key].flatMap(numberOf) else {
                    row.append("–")
                    continue
                }
                let p = placed[key].flatMap(numberOf).map { String(Int($0)) } ?? "?"
                let r = rates[key].flatMap(numberOf).map { String(Int($0)) } ?? "?"
                row.append("\(Self.format(ms)) (\(p), \(r)/s)")
            }
            rows.append(row)
        }
        return Self.align(rows)
    }

    static func align(_ rows: [[String]]) -> String {
        let columns = rows.map(\.count).max() ?? 0
        var widths = [Int](repeating: 0, count: columns)
        for row in rows { for (index, cell) in row.enumerated() { widths[index] = max(widths[index], cell.count) } }
        return rows.map { row in
            row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell + String(repeating: " ", count: widths[index] - cell.count)
            }.joined(separator: "  ").trimmingCharacters(in: .whitespaces)
        }.joined(separator: "\n")
    }
}
