import Foundation

extension PolicyDocument {
    static let commonFields = ["kind", "name", "effective_from", "reason"]
    static let fields: [PolicyKind: [String]] = [
        .jurisdictionSet: commonFields + ["members"],
        .dataset: commonFields + ["steward", "class", "export_class", "residency", "use", "derived_from", "network"],
        .donorPolicy: commonFields + ["timezone", "grace", "permit", "forbid"],
        .federation: commonFields + ["forbid", "export_classes"],
    ]
    static let matchFields = ["partners", "projects", "kinds", "classes"]

    /// Jurisdiction set names: upper case like jurisdiction codes (`EEA`, `GDPR_ADEQUATE`).
    public static func isSetName(_ text: String) -> Bool {
        guard let first = text.unicodeScalars.first, ("A"..."Z").contains(first), (2...32).contains(text.count) else { return false }
        return text.unicodeScalars.allSatisfy { ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "_" || $0 == "-" }
    }

    /// Validates the shape of a rule document (decoded from YAML or JSON) and returns it, or every problem found,
    /// each naming its field. References to other things (partners, jurisdictions, sets) are checked against the
    /// federation by ``PolicySnapshot/referenceErrors(_:)``.
    public static func parse(_ value: JSONValue) -> Result<PolicyDocument, ValidationFailure> {
        guard case .object(let object) = value else {
            return .failure(ValidationFailure([FieldError(field: "(document)", message: "expected a mapping with kind and name, got \(value.typeName)")]))
        }
        var reader = FieldReader(object: object, prefix: "", errors: [])
        let kinds = PolicyKind.allCases.map(\.rawValue)
        guard let kindText = reader.optionalString("kind") else {
            reader.fail("kind", "required; expected one of \(kinds.joined(separator: ", "))")
            return .failure(ValidationFailure(reader.errors))
        }
        guard let kind = PolicyKind(rawValue: kindText) else {
            let hint = Suggestion.closest(to: kindText, among: kinds).map { "; did you mean \"\($0)\"?" } ?? ""
            reader.fail("kind", "expected one of \(kinds.joined(separator: ", ")), got \"\(kindText)\"\(hint)")
            return .failure(ValidationFailure(reader.errors))
        }
        reader.rejectUnknown(allowed: fields[kind]!)
        let name: String?
        if kind == .jurisdictionSet {
            name = reader.optionalString("name")
            if let name, !isSetName(name) {
                reader.fail("name", "expected an upper-case set name such as \"EEA\" (A-Z, 0-9, '_', '-'; 2 to 32), got \"\(name)\"")
            } else if name == nil {
                reader.fail("name", "required; expected an upper-case set name such as \"EEA\"")
            }
        } else {
            name = reader.requiredString("name", pattern: .identifier)
        }
        var effectiveFrom: Date?
        if let text = reader.optionalString("effective_from") {
            effectiveFrom = try? Date(text, strategy: .iso8601)
            if effectiveFrom == nil { reader.fail("effective_from", "expected an ISO 8601 time such as \"2027-01-01T00:00:00Z\", got \"\(text)\"") }
        }
        let reason = reader.optionalString("reason")
        let body: PolicyBody?
        switch kind {
        case .jurisdictionSet: body = reader.jurisdictionSet().map(PolicyBody.jurisdictionSet)
        case .dataset: body = reader.dataset().map(PolicyBody.dataset)
        case .donorPolicy: body = reader.donorPolicy().map(PolicyBody.donorPolicy)
        case .federation: body = reader.federation().map(PolicyBody.federation)
        }
        guard reader.errors.isEmpty, let name, let body else { return .failure(ValidationFailure(reader.errors)) }
        return .success(PolicyDocument(name: name, effectiveFrom: effectiveFrom, reason: reason, body: body))
    }
}

extension FieldReader {
    /// A nested mapping read with its own field prefix; errors are merged back by ``merge(_:)``.
    mutating func nested(_ field: String, allowed: [String]) -> FieldReader? {
        switch object[field] {
        case nil, .null: return nil
        case .object(let inner):
            var reader = FieldReader(object: inner, prefix: prefix + field + ".", errors: [])
            reader.rejectUnknown(allowed: allowed)
            return reader
        case let other?:
            fail(field, "expected a mapping with \(allowed.joined(separator: ", ")), got \(other.typeName)")
            return nil
        }
    }

    mutating func merge(_ other: FieldReader) { errors += other.errors }

    /// A list of strings that must each satisfy `valid`; `nil` when absent.
    mutating func strings(_ field: String, expected: String, valid: (String) -> Bool) -> [String]? {
        switch object[field] {
        case nil, .null: return nil
        case .array(let items):
            var result: [String] = []
            for (index, item) in items.enumerated() {
                guard case .string(let text) = item, valid(text) else {
                    let shown = if case .string(let text) = item { "\"\(text)\"" } else { item.typeName }
                    fail("\(field)[\(index)]", "expected \(expected), got \(shown)")
                    continue
                }
                if !result.contains(text) { result.append(text) }
            }
            return result
        case let other?:
            fail(field, "expected a list of \(expected), got \(other.typeName)")
            return nil
        }
    }

    mutating func enums<T: RawRepresentable & CaseIterable>(_ field: String, _: T.Type) -> [T]? where T.RawValue == String {
        let names = T.allCases.map(\.rawValue)
        guard let texts = strings(field, expected: "one of \(names.joined(separator: ", "))", valid: { T(rawValue: $0) != nil }) else { return nil }
        return texts.compactMap(T.init(rawValue:))
    }

    mutating func bool(_ field: String) -> Bool? {
        switch object[field] {
        case nil, .null: return nil
        case .bool(let flag): return flag
        case let other?:
            fail(field, "expected true or false, got \(other.typeName)")
            return nil
        }
    }

    mutating func labels(_ field: String) -> [String: String] {
        switch object[field] {
        case nil, .null: return [:]
        case .object(let entries):
            var labels: [String: String] = [:]
            for (key, value) in entries {
                guard Name.isValid(key) else {
                    fail("\(field).\(key)", "expected a label name (letters, digits, '-', '_', '.')")
                    continue
                }
                switch value {
                case .string, .number, .bool: labels[key] = Self.scalarText(value)
                default: fail("\(field).\(key)", "expected a string, got \(value.typeName)")
                }
            }
            return labels
        case let other?:
            fail(field, "expected a mapping of label names to values such as {tre: \"true\"}, got \(other.typeName)")
            return [:]
        }
    }

    static func isRegionRef(_ text: String) -> Bool {
        PolicyDocument.isSetName(text) || (text.count >= 2 && text.unicodeScalars.allSatisfy { ("A"..."Z").contains($0) || ("0"..."9").contains($0) || $0 == "-" })
    }

    mutating func jurisdictionRefs(_ field: String) -> [String]? {
        strings(field, expected: "a jurisdiction code or set name such as \"KE\" or \"EEA\"", valid: Self.isRegionRef)
    }

    mutating func names(_ field: String, what: String) -> [String]? {
        strings(field, expected: "\(what) name", valid: Name.isValid)
    }

    mutating func jobMatch() -> JobMatch {
        JobMatch(
            partners: names("partners", what: "a partner"), projects: names("projects", what: "a project"),
            kinds: enums("kinds", JobKind.self), classes: enums("classes", DataClass.self))
    }

    /// Each item of a list as a mapping, read by `read` with the prefix `field[i].`.
    mutating func items<T>(_ field: String, allowed: [String], _ read: (inout FieldReader, Int) -> T?) -> [T] {
        switch object[field] {
        case nil, .null: return []
        case .array(let items):
            var result: [T] = []
            for (index, item) in items.enumerated() {
                guard case .object(let inner) = item else {
                    fail("\(field)[\(index)]", "expected a mapping with \(allowed.joined(separator: ", ")), got \(item.typeName)")
                    continue
                }
                var reader = FieldReader(object: inner, prefix: "\(prefix)\(field)[\(index)].", errors: [])
                reader.rejectUnknown(allowed: allowed)
                let value = read(&reader, index)
                merge(reader)
                if let value { result.append(value) }
            }
            return result
        case let other?:
            fail(field, "expected a list of mappings, got \(other.typeName)")
            return []
        }
    }

    mutating func jurisdictionSet() -> JurisdictionSetRule? {
        guard case .array(let items)? = object["members"] else {
            fail("members", "required; expected a list of jurisdiction codes or set names such as [DE, FR, EEA]")
            return nil
        }
        var members: [SetMember] = []
        for (index, item) in items.enumerated() {
            let field = "members[\(index)]"
            switch item {
            case .string(let ref) where Self.isRegionRef(ref):
                members.append(SetMember(ref))
            case .object(let inner):
                var reader = FieldReader(object: inner, prefix: "\(prefix)\(field).", errors: [])
                reader.rejectUnknown(allowed: ["jurisdiction", "set", "when"])
                let refs = ["jurisdiction", "set"].compactMap { reader.optionalString($0) }
                var condition: LabelCondition?
                if var when = reader.nested("when", allowed: ["label", "equals"]) {
                    let label = when.optionalString("label")
                    let equals = when.object["equals"].map(Self.scalarText)
                    if label == nil { when.fail("label", "required; expected a host label name") }
                    if equals == nil { when.fail("equals", "required; expected the label's value") }
                    reader.merge(when)
                    if let label, let equals { condition = LabelCondition(label: label, equals: equals) }
                }
                if refs.count != 1 {
                    reader.fail("jurisdiction", "expected exactly one of jurisdiction or set")
                } else if !Self.isRegionRef(refs[0]) {
                    reader.fail("jurisdiction", "expected a jurisdiction code or set name, got \"\(refs[0])\"")
                } else {
                    members.append(SetMember(refs[0], when: condition))
                }
                merge(reader)
            default:
                fail(field, "expected a jurisdiction code, a set name or {jurisdiction: CODE, when: {label: L, equals: V}}")
            }
        }
        if items.isEmpty { fail("members", "expected at least one member") }
        return JurisdictionSetRule(members: members)
    }

    mutating func dataset() -> DatasetRule? {
        let steward = requiredString("steward", pattern: .identifier)
        var dataClass = DataClass.public
        if let text = optionalString("class") {
            if let parsed = DataClass(rawValue: text) {
                dataClass = parsed
            } else {
                fail("class", "expected one of \(DataClass.allCases.map(\.rawValue).joined(separator: ", ")), got \"\(text)\"")
            }
        }
        let exportClass = optionalString("export_class")
        if let exportClass, !PolicyDocument.isSetName(exportClass) {
            fail("export_class", "expected an upper-case export class name such as \"CTRL-A\", got \"\(exportClass)\"")
        }
        var residency = Residency()
        if var reader = nested("residency", allowed: ["allow", "deny", "partners", "host_labels"]) {
            residency = Residency(
                allow: reader.jurisdictionRefs("allow"), deny: reader.jurisdictionRefs("deny") ?? [],
                partners: reader.names("partners", what: "a partner"), hostLabels: reader.labels("host_labels"))
            if residency.allow == [] { reader.fail("allow", "expected at least one jurisdiction (omit allow for anywhere)") }
            merge(reader)
        }
        var use = UseConditions()
        if var reader = nested("use", allowed: ["purposes", "non_commercial", "partners", "projects", "kinds"]) {
            use = UseConditions(
                purposes: reader.names("purposes", what: "a purpose"), nonCommercial: reader.bool("non_commercial") ?? false,
                partners: reader.names("partners", what: "a partner"), projects: reader.names("projects", what: "a project"),
                kinds: reader.enums("kinds", JobKind.self))
            merge(reader)
        }
        var derived: [Inheritance] = []
        if case .array(let items)? = object["derived_from"] {
            for (index, item) in items.enumerated() {
                switch item {
                case .string(let source) where Name.isValid(source):
                    derived.append(Inheritance(source: source))
                case .object(let inner):
                    var reader = FieldReader(object: inner, prefix: "\(prefix)derived_from[\(index)].", errors: [])
                    reader.rejectUnknown(allowed: ["source", "relaxed"])
                    let source = reader.requiredString("source", pattern: .identifier)
                    var relaxation: Relaxation?
                    if var relaxed = reader.nested("relaxed", allowed: ["by", "attestation"]) {
                        let by = relaxed.requiredString("by", pattern: .identifier)
                        let attestation = relaxed.optionalString("attestation")
                        if attestation?.isEmpty ?? true { relaxed.fail("attestation", "required; expected the reference that justifies relaxing") }
                        reader.merge(relaxed)
                        if let by, let attestation { relaxation = Relaxation(by: by, attestation: attestation) }
                    }
                    merge(reader)
                    if let source { derived.append(Inheritance(source: source, relaxed: relaxation)) }
                default:
                    fail("derived_from[\(index)]", "expected a dataset name or {source: NAME, relaxed: {by: PARTNER, attestation: TEXT}}")
                }
            }
        } else if let other = object["derived_from"], other != .null {
            fail("derived_from", "expected a list of dataset names, got \(other.typeName)")
        }
        var network: Bool?
        switch object["network"] {
        case nil, .null: break
        case .string("allow"), .bool(true): network = true
        case .string("deny"), .bool(false): network = false
        case let other?: fail("network", "expected allow or deny, got \(FieldReader.describe(other))")
        }
        guard let steward else { return nil }
        return DatasetRule(
            steward: steward, dataClass: dataClass, exportClass: exportClass, residency: residency, use: use, derivedFrom: derived,
            network: network)
    }

    mutating func donorRule(_ index: Int, kind: String, allowWindows: Bool) -> DonorRule? {
        let id = optionalString("id") ?? "\(kind)-\(index + 1)"
        if !Name.isValid(id) { fail("id", "expected a rule id (letters, digits, '-', '_', '.'), got \"\(id)\"") }
        let match = jobMatch()
        var windows: [TimeWindow]?
        if allowWindows, object["windows"] != nil {
            windows = items("windows", allowed: ["days", "from", "to"]) { reader, _ in reader.window() }
        }
        let finish = allowWindows ? (bool("must_finish_within_window") ?? false) : false
        return DonorRule(id: id, match: match, windows: windows, mustFinishWithinWindow: finish)
    }

    mutating func window() -> TimeWindow? {
        let days = enums("days", Weekday.self)
        let from = clock("from")
        let to = clock("to")
        guard let from, let to else { return nil }
        return TimeWindow(days: days, fromMinute: from, toMinute: to)
    }

    /// `"18:00"` as minutes after midnight.
    mutating func clock(_ field: String) -> Int? {
        guard let text = optionalString(field) else {
            fail(field, "required; expected a local time such as \"18:00\"")
            return nil
        }
        let parts = text.split(separator: ":")
        if parts.count == 2, let hour = Int(parts[0]), let minute = Int(parts[1]), (0...24).contains(hour), (0...59).contains(minute),
            hour * 60 + minute <= 24 * 60, parts[1].count == 2
        {
            return hour * 60 + minute
        }
        fail(field, "expected a local time such as \"18:00\", got \"\(text)\"")
        return nil
    }

    mutating func donorPolicy() -> DonorPolicy? {
        let timezone = optionalString("timezone") ?? "UTC"
        if TimeZone(identifier: timezone) == nil {
            let hint = Suggestion.closest(to: timezone, among: TimeZone.knownTimeZoneIdentifiers).map { "; did you mean \"\($0)\"?" } ?? ""
            fail("timezone", "expected an IANA time zone such as \"Africa/Nairobi\", got \"\(timezone)\"\(hint)")
        }
        var grace = DonorPolicy.defaultGraceSeconds
        if let text = optionalString("grace") {
            if let seconds = Quantity.seconds(text) { grace = seconds } else { fail("grace", "expected a duration such as \"10m\", got \"\(text)\"") }
        }
        let allowed = ["id"] + PolicyDocument.matchFields + ["windows", "must_finish_within_window"]
        let permit = items("permit", allowed: allowed) { reader, index in reader.donorRule(index, kind: "permit", allowWindows: true) }
        let forbid = items("forbid", allowed: ["id"] + PolicyDocument.matchFields) { reader, index in
            reader.donorRule(index, kind: "forbid", allowWindows: false)
        }
        let ids = (permit + forbid).map(\.id)
        for id in Set(ids) where ids.count(where: { $0 == id }) > 1 { fail("permit", "rule id \"\(id)\" is used twice") }
        return DonorPolicy(timezone: timezone, graceSeconds: grace, permit: permit, forbid: forbid)
    }

    mutating func federation() -> FederationPolicy? {
        let forbid = items("forbid", allowed: ["id"] + PolicyDocument.matchFields + ["jurisdictions"]) { reader, index in
            let id = reader.optionalString("id") ?? "forbid-\(index + 1)"
            let match = reader.jobMatch()
            let jurisdictions = reader.jurisdictionRefs("jurisdictions")
            if match == JobMatch(), jurisdictions == nil {
                reader.fail("partners", "a forbid needs at least one of partners, projects, kinds, classes, jurisdictions")
            }
            return FederationForbid(id: id, match: match, jurisdictions: jurisdictions)
        }
        var classes: [String: [String]] = [:]
        switch object["export_classes"] {
        case nil, .null: break
        case .object(let entries):
            var reader = FieldReader(object: entries, prefix: prefix + "export_classes.", errors: [])
            for name in entries.keys.sorted() {
                if !PolicyDocument.isSetName(name) { reader.fail(name, "expected an upper-case export class name such as \"CTRL-A\"") }
                if let refs = reader.jurisdictionRefs(name) { classes[name] = refs } else { reader.fail(name, "expected a list of jurisdictions") }
            }
            merge(reader)
        case let other?:
            fail("export_classes", "expected a mapping of class names to jurisdiction lists, got \(other.typeName)")
        }
        return FederationPolicy(forbid: forbid, exportClasses: classes)
    }
}
