# Installs karx as a CMake package: the static library, its module interface units (which a
# consumer's build compiles into BMIs with its own compiler and flags), and a config file, so
# that another project does
#   find_package(karx CONFIG REQUIRED)
#   target_link_libraries(app PRIVATE karx::karx)
# and `import karx;`. Module interface units are sources, not prebuilt BMIs: a BMI is only
# valid for the compiler and flags that made it.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(karx_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/karx)

install(TARGETS karx EXPORT karxTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  FILE_SET CXX_MODULES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/karx/modules)
install(EXPORT karxTargets
  NAMESPACE karx::
  DESTINATION ${karx_cmake_dir}
  FILE karxTargets.cmake
  CXX_MODULES_DIRECTORY modules)

configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/karxConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/karxConfig.cmake
  INSTALL_DESTINATION ${karx_cmake_dir})
# 0.x: a new minor version may break the API, so only the same minor version is compatible.
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/karxConfigVersion.cmake
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMinorVersion)
install(FILES
  ${CMAKE_CURRENT_BINARY_DIR}/karxConfig.cmake
  ${CMAKE_CURRENT_BINARY_DIR}/karxConfigVersion.cmake
  DESTINATION ${karx_cmake_dir})
