/// The version of bindu-mesh, as `bindu-mesh --version` prints it.
package enum BinduMeshVersion {
  /// Semantic version of this release.
  package static let current = "0.2.0"
}
