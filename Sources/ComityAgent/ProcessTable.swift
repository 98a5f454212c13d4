import Foundation

/// Read-only views of Linux `/proc`, used to find a job's processes and to recognise them after an agent restart.
///
/// Every function returns `nil` where `/proc` is missing (macOS), so callers fall back to plain `kill(-pgid, 0)`.
package enum ProcessTable {
    /// One process as `/proc/<pid>/stat` describes it.
    package struct Entry: Sendable, Hashable {
        package var pid: Int32
        /// The one-letter state (`R`, `S`, `D`, `Z`, …).
        package var state: Character
        package var parent: Int32
        package var group: Int32

        package var isZombie: Bool { state == "Z" || state == "X" }

        package init(pid: Int32, state: Character, parent: Int32, group: Int32) {
            self.pid = pid
            self.state = state
            self.parent = parent
            self.group = group
        }
    }

    /// Parses one `/proc/<pid>/stat` line; the command name may contain spaces and parentheses, so fields are read
    /// after the last `)`.
    package static func parseStat(_ line: String) -> Entry? {
        guard let open = line.firstIndex(of: "("), let close = line.lastIndex(of: ")"), open < close,
            let pid = Int32(line[..<open].trimmingCharacters(in: .whitespaces))
        else { return nil }
        let fields = line[line.index(after: close)...].split(separator: " ")
        guard fields.count >= 3, let state = fields[0].first, let parent = Int32(fields[1]),
            let group = Int32(fields[2])
        else { return nil }
        return Entry(pid: pid, state: state, parent: parent, group: group)
    }

    /// Every process whose process group is `pgid`, or `nil` when `/proc` cannot be read.
    package static func members(ofGroup pgid: Int32) -> [Entry]? {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return nil }
        var members: [Entry] = []
        for name in names where name.first?.isNumber == true {
            guard let text = try? String(contentsOfFile: "/proc/\(name)/stat", encoding: .utf8),
                let entry = parseStat(text), entry.group == pgid
            else { continue }
            members.append(entry)
        }
        return members
    }

    /// The environment a process was started with, or `nil` when it cannot be read (gone, or not ours).
    package static func environment(of pid: Int32) -> [String: String]? {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return nil }
        var environment: [String: String] = [:]
        for entry in data.split(separator: 0) {
            let text = String(decoding: entry, as: UTF8.self)
            guard let equals = text.firstIndex(of: "=") else { continue }
            environment[String(text[..<equals])] = String(text[text.index(after: equals)...])
        }
        return environment
    }

    /// This boot's random id (`/proc/sys/kernel/random/boot_id`): process ids from another boot mean nothing.
    package static func bootID() -> String? {
        (try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8))?
            .trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
