import NIOHPACK

/// The size of a header list as SETTINGS_MAX_HEADER_LIST_SIZE counts it (RFC 9113 §6.5.2): each
/// field's name and value in octets, plus 32.
public enum HeaderListSize {
  public static func of(_ headers: HPACKHeaders) -> Int {
    var size = 0
    for (name, value, _) in headers { size += name.utf8.count + value.utf8.count + 32 }
    return size
  }
}
