import ComityCore
import Foundation
import Yams

/// A `--resources` file, which replaces detection so that tests and demos can simulate any host:
///
/// ```yaml
/// cpus: 64
/// memory: 512Gi
/// gpus:
///   - {model: NVIDIA H100 80GB HBM3, memory: 80Gi, uuid: GPU-1}
///   - {model: H100, memory: 80Gi, uuid: GPU-2, index: 1}
/// ```
///
/// `cpus` and `memory` are required; `gpus` defaults to none; a GPU's `index` defaults to its position in the list
/// and its `uuid` to empty (jobs then see it by index).
package enum ResourcesFile {
    static let fields = ["cpus", "memory", "gpus"]
    static let gpuFields = ["model", "memory", "uuid", "index"]

    /// Reads and validates the file at `path`.
    ///
    /// - Throws: ``ValidationFailure`` whose errors name the file's fields (`gpus[1].memory`).
    package static func load(path: String) throws(ValidationFailure) -> HostResources {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ValidationFailure([FieldError(field: "(file)", message: "cannot read \(path)")])
        }
        return try parse(String(decoding: data, as: UTF8.self))
    }

    /// Parses and validates YAML (or JSON) text.
    package static func parse(_ text: String) throws(ValidationFailure) -> HostResources {
        let document: JSONValue
        do {
            document = try YAMLDecoder().decode(JSONValue.self, from: text)
        } catch {
            throw ValidationFailure([FieldError(field: "(document)", message: "not valid YAML: \(error)")])
        }
        return try validate(document)
    }

    /// Validates a decoded document, collecting every problem.
    package static func validate(_ document: JSONValue) throws(ValidationFailure) -> HostResources {
        guard case .object(let object) = document else {
            throw ValidationFailure([
                FieldError(
                    field: "(document)",
                    message: "expected a mapping like {cpus: 64, memory: 512Gi}, got \(document.typeName)"
                )
            ])
        }
        var errors: [FieldError] = []
        rejectUnknown(object, allowed: fields, prefix: "", into: &errors)

        var cpuMillis: Int?
        switch object["cpus"] {
        case nil, .null:
            errors.append(FieldError(field: "cpus", message: "required; expected a number of CPUs such as 64"))
        case .number(let cpus) where cpus > 0 && cpus <= 65_536:
            cpuMillis = Int((cpus * 1000).rounded())
        case let other?:
            errors.append(
                FieldError(
                    field: "cpus",
                    message: "expected a number of CPUs greater than 0 such as 64, got \(describe(other))"
                )
            )
        }
        let memory = size(object["memory"], field: "memory", into: &errors)

        var gpus: [GPU] = []
        switch object["gpus"] {
        case nil, .null:
            break
        case .array(let items):
            for (position, item) in items.enumerated() {
                if let gpu = validateGPU(item, position: position, into: &errors) { gpus.append(gpu) }
            }
            var seenIndices: Set<Int> = []
            var seenUUIDs: Set<String> = []
            for (position, gpu) in gpus.enumerated() {
                if !seenIndices.insert(gpu.index).inserted {
                    errors.append(
                        FieldError(
                            field: "gpus[\(position)].index",
                            message: "index \(gpu.index) is used by an earlier GPU"
                        )
                    )
                }
                if !gpu.uuid.isEmpty, !seenUUIDs.insert(gpu.uuid).inserted {
                    errors.append(
                        FieldError(
                            field: "gpus[\(position)].uuid",
                            message: "\"\(gpu.uuid)\" is used by an earlier GPU"
                        )
                    )
                }
            }
        case let other?:
            errors.append(
                FieldError(
                    field: "gpus",
                    message:
                        "expected a list of GPUs like [{model: H100, memory: 80Gi, uuid: GPU-1}], got \(other.typeName)"
                )
            )
        }

        guard errors.isEmpty, let cpuMillis, let memory else { throw ValidationFailure(errors) }
        return HostResources(cpuMillis: cpuMillis, memoryBytes: memory, gpus: gpus)
    }

    private static func validateGPU(_ item: JSONValue, position: Int, into errors: inout [FieldError]) -> GPU? {
        let prefix = "gpus[\(position)]."
        guard case .object(let gpu) = item else {
            errors.append(
                FieldError(
                    field: "gpus[\(position)]",
                    message: "expected a mapping like {model: H100, memory: 80Gi, uuid: GPU-1}, got \(item.typeName)"
                )
            )
            return nil
        }
        let before = errors.count
        rejectUnknown(gpu, allowed: gpuFields, prefix: prefix, into: &errors)
        var model: String?
        switch gpu["model"] {
        case .string(let text) where !text.trimmingCharacters(in: .whitespaces).isEmpty && text.count <= 128:
            model = text.trimmingCharacters(in: .whitespaces)
        case nil, .null:
            errors.append(
                FieldError(field: prefix + "model", message: "required; expected a GPU model such as \"H100\"")
            )
        case let other?:
            errors.append(
                FieldError(
                    field: prefix + "model",
                    message: "expected a GPU model such as \"H100\", got \(describe(other))"
                )
            )
        }
        let memory = size(gpu["memory"], field: prefix + "memory", into: &errors)
        var uuid = ""
        switch gpu["uuid"] {
        case nil, .null: break
        case .string(let text) where !text.isEmpty && !text.contains(",") && !text.contains(where: \.isWhitespace):
            uuid = text
        case let other?:
            errors.append(
                FieldError(
                    field: prefix + "uuid",
                    message:
                        "expected a GPU UUID such as \"GPU-fb4909a4-…\" (no spaces or commas), got \(describe(other))"
                )
            )
        }
        var index = position
        switch gpu["index"] {
        case nil, .null: break
        case .number(let number) where number >= 0 && number < 1024 && number.rounded() == number:
            index = Int(number)
        case let other?:
            errors.append(
                FieldError(
                    field: prefix + "index",
                    message: "expected a whole number from 0 to 1023, got \(describe(other))"
                )
            )
        }
        guard errors.count == before, let model, let memory else { return nil }
        return GPU(index: index, uuid: uuid, model: model, memoryBytes: memory)
    }

    private static func size(_ value: JSONValue?, field: String, into errors: inout [FieldError]) -> Int64? {
        switch value {
        case nil, .null:
            errors.append(FieldError(field: field, message: "required; expected a size like \"80Gi\""))
        case .string(let text):
            if let bytes = Quantity.bytes(text), bytes > 0 { return bytes }
            errors.append(
                FieldError(
                    field: field,
                    message: "expected a size like \"512Gi\", \"80Gi\" or \"64G\", got \"\(text)\""
                )
            )
        case .number(let number) where number >= 1 && number.rounded() == number && number < 9e18:
            return Int64(number)
        case let other?:
            errors.append(
                FieldError(
                    field: field,
                    message: "expected a size like \"512Gi\", \"80Gi\" or \"64G\", got \(describe(other))"
                )
            )
        }
        return nil
    }

    private static func rejectUnknown(
        _ object: [String: JSONValue],
        allowed: [String],
        prefix: String,
        into errors: inout [FieldError]
    ) {
        for key in object.keys.sorted() where !allowed.contains(key) {
            let hint =
                Suggestion.closest(to: key, among: allowed).map { "did you mean \"\($0)\"?" }
                ?? "expected one of \(allowed.joined(separator: ", "))"
            errors.append(FieldError(field: prefix + key, message: "unknown field; \(hint)"))
        }
    }

    private static func describe(_ value: JSONValue) -> String {
        switch value {
        case .string(let text): "\"\(text)\""
        case .number(let number): number.rounded() == number && abs(number) < 1e15 ? "\(Int64(number))" : "\(number)"
        case .bool(let flag): "\(flag)"
        default: value.typeName
        }
    }
}
