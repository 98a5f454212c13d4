import ComityCore
import Foundation
import Yams

/// Reads a job file (YAML, or JSON, which is also accepted) into an untyped document for the server to validate.
///
/// Scalars keep their YAML meaning: quoted text stays text (`"3"` is a string), plain `3` is a number,
/// `true`/`false` are booleans, `~`/`null` is null. Syntax errors name the line and column.
enum JobFile {
    /// The largest job file accepted; job files are small, anything bigger is a mistake.
    static let maxBytes = 4 << 20

    /// Loads the document at `path` (`-` reads standard input).
    ///
    /// - Throws: ``CommandFailure`` with exit status 2 when the file cannot be read or parsed.
    static func load(_ path: String) throws -> JSONValue {
        let name = path == "-" ? "<stdin>" : path
        let data: Data
        do {
            data =
                path == "-"
                ? FileHandle.standardInput.readDataToEndOfFile() : try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw failure("cannot read job file \(name): \(error.localizedDescription)")
        }
        guard data.count <= maxBytes else {
            throw failure("\(name): larger than \(maxBytes >> 20) MiB, not a job file")
        }
        guard let text = String(data: data, encoding: .utf8) else { throw failure("\(name): not UTF-8 text") }
        return try parse(text, name: name)
    }

    /// Parses job file text; `name` is used in error messages.
    static func parse(_ text: String, name: String) throws -> JSONValue {
        // Strict JSON first for JSON files; when it fails, YAML parsing reports the error with its position.
        if looksLikeJSON(text), let value = try? JSONDecoder().decode(JSONValue.self, from: Data(text.utf8)) {
            return value
        }
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw describe(error, name: name, text: text)
        } catch {
            throw failure("\(name): \(error)")
        }
        guard let root else { throw failure("\(name): the file is empty; expected a mapping of job fields") }
        return try value(of: root, name: name)
    }

    // MARK: - Private

    private static func looksLikeJSON(_ text: String) -> Bool {
        text.first { !$0.isWhitespace } == "{"
    }

    private static func value(of node: Node, name: String) throws -> JSONValue {
        switch node {
        case .scalar(let scalar):
            switch node.tag.description {
            case Tag.Name.null.rawValue:
                return .null
            case Tag.Name.bool.rawValue:
                if let value = Bool.construct(from: scalar) { return .bool(value) }
            case Tag.Name.int.rawValue:
                if let value = Int64.construct(from: scalar) { return .number(Double(value)) }
            case Tag.Name.float.rawValue:
                if let value = Double.construct(from: scalar) {
                    guard value.isFinite else {
                        throw located(node, name: name, "\(scalar.string) is not a finite number")
                    }
                    return .number(value)
                }
            default:
                break
            }
            return .string(scalar.string)
        case .sequence(let sequence):
            return .array(try sequence.map { try value(of: $0, name: name) })
        case .mapping(let mapping):
            var object: [String: JSONValue] = [:]
            for (key, item) in mapping {
                guard case .scalar(let keyScalar) = key else {
                    throw located(key, name: name, "a mapping key must be plain text, not a list or mapping")
                }
                guard object[keyScalar.string] == nil else {
                    throw located(key, name: name, "duplicate key \"\(keyScalar.string)\"")
                }
                object[keyScalar.string] = try value(of: item, name: name)
            }
            return .object(object)
        case .alias:
            throw located(node, name: name, "YAML aliases are not supported in job files")
        }
    }

    private static func located(_ node: Node, name: String, _ problem: String) -> CommandFailure {
        guard let mark = node.mark else { return failure("\(name): \(problem)") }
        return failure("\(name): line \(mark.line), column \(mark.column): \(problem)")
    }

    private static func describe(_ error: YamlError, name: String, text: String) -> CommandFailure {
        switch error {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
            .composer(let context, let problem, let mark, _):
            var message = "\(name): line \(mark.line), column \(mark.column): \(problem)"
            if let context {
                message += " (\(context.text) at line \(context.mark.line), column \(context.mark.column))"
            }
            let snippet = mark.snippet(from: text).split(separator: "\n", omittingEmptySubsequences: false)
            return failure(message, details: snippet.map { "  " + $0 })
        case .reader(let problem, let offset, _, _):
            return failure("\(name): \(problem)" + (offset.map { " at byte \($0)" } ?? ""))
        case .duplicatedKeysInMapping(let duplicates, let context):
            let keys = duplicates.sorted().map { "\"\($0)\"" }.joined(separator: ", ")
            return failure("\(name): line \(context.mark.line), column \(context.mark.column): duplicate key \(keys)")
        default:
            return failure("\(name): \(error)".oneLine)
        }
    }

    private static func failure(_ message: String, details: [String] = []) -> CommandFailure {
        CommandFailure(message: message, details: details, exitCode: ExitStatus.usage)
    }
}
