/// The version of bindu-mesh, as `bindu-mesh --version` prints it.
public enum BinduMeshVersion {
  /// Semantic version of this release.
  public static let current = "0.2.0"
}
