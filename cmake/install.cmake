# SPDX-License-Identifier: MIT OR Apache-2.0
# What `cmake --install` puts under the prefix (GNU layout):
#   include/amn/*.h, lib/libamaters-net.a, lib/libamaters-net.so.* (soname .so.MAJOR.MINOR before 1.0),
#   lib/pkgconfig/amaters-net.pc, lib/cmake/amaters-net/ (find_package(amaters-net):
#   amaters-net::amaters-net (shared) and amaters-net::amaters-net-static),
#   bin/amaters-cli, sbin/amaters-netd, share/amaters-net/proto/*.proto,
#   share/doc/amaters-net/ (example configuration, example programs, licences, changelog),
#   share/man/man1/amaters-cli.1, man5/amaters-net.toml.5, man8/amaters-netd.8,
#   lib/systemd/system/amaters-netd.service and amaters-netd.socket (AMN_SYSTEMD_UNITDIR).
# Everything is relocatable: the .pc file and the CMake package find the prefix from their own place.
include(CMakePackageConfigHelpers)
set(AMN_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/amaters-net)

install(DIRECTORY ${CMAKE_SOURCE_DIR}/include/amn DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(TARGETS amaters-net-shared EXPORT amaters-net-targets
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(TARGETS amaters-net EXPORT amaters-net-static-targets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
install(EXPORT amaters-net-targets NAMESPACE amaters-net:: DESTINATION ${AMN_CMAKE_DIR})
install(EXPORT amaters-net-static-targets NAMESPACE amaters-net:: DESTINATION ${AMN_CMAKE_DIR})
configure_package_config_file(${CMAKE_SOURCE_DIR}/cmake/amaters-net-config.cmake.in
  ${CMAKE_BINARY_DIR}/amaters-net-config.cmake INSTALL_DESTINATION ${AMN_CMAKE_DIR})
# Before 1.0 only the same minor version is compatible (see the soname).
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(AMN_COMPAT SameMinorVersion)
else()
  set(AMN_COMPAT SameMajorVersion)
endif()
write_basic_package_version_file(${CMAKE_BINARY_DIR}/amaters-net-config-version.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY ${AMN_COMPAT})
install(FILES ${CMAKE_BINARY_DIR}/amaters-net-config.cmake ${CMAKE_BINARY_DIR}/amaters-net-config-version.cmake
        DESTINATION ${AMN_CMAKE_DIR})

# pkg-config: prefix relative to the .pc file's own directory (${pcfiledir}).
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(AMN_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  file(RELATIVE_PATH AMN_PC_REL /${CMAKE_INSTALL_LIBDIR}/pkgconfig /)
  string(REGEX REPLACE "/$" "" AMN_PC_REL "${AMN_PC_REL}")
  set(AMN_PC_PREFIX "\${pcfiledir}/${AMN_PC_REL}")
endif()
configure_file(${CMAKE_SOURCE_DIR}/cmake/amaters-net.pc.in ${CMAKE_BINARY_DIR}/amaters-net.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/amaters-net.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

if(TARGET amaters-cli)
  install(TARGETS amaters-cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
if(TARGET amaters-netd)
  install(TARGETS amaters-netd RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR})
endif()
install(FILES ${CMAKE_SOURCE_DIR}/proto/amaters.proto ${CMAKE_SOURCE_DIR}/proto/health.proto
        DESTINATION ${CMAKE_INSTALL_DATADIR}/amaters-net/proto)
install(DIRECTORY ${CMAKE_SOURCE_DIR}/proto/grpc DESTINATION ${CMAKE_INSTALL_DATADIR}/amaters-net/proto
        FILES_MATCHING PATTERN "*.proto")
install(FILES ${CMAKE_SOURCE_DIR}/examples/amaters-net.toml ${CMAKE_SOURCE_DIR}/LICENSE-MIT
              ${CMAKE_SOURCE_DIR}/LICENSE-APACHE ${CMAKE_SOURCE_DIR}/CHANGELOG.md ${CMAKE_SOURCE_DIR}/README.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY ${CMAKE_SOURCE_DIR}/examples/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples
        FILES_MATCHING PATTERN "*.c" PATTERN "*.h")
install(FILES ${CMAKE_SOURCE_DIR}/man/amaters-cli.1 DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
install(FILES ${CMAKE_SOURCE_DIR}/man/amaters-net.toml.5 DESTINATION ${CMAKE_INSTALL_MANDIR}/man5)
install(FILES ${CMAKE_SOURCE_DIR}/man/amaters-netd.8 DESTINATION ${CMAKE_INSTALL_MANDIR}/man8)

# systemd units (dist/systemd): ExecStart names the installed daemon.
set(AMN_SYSTEMD_UNITDIR lib/systemd/system CACHE STRING "where the systemd units go, relative to the prefix")
if(TARGET amaters-netd)
  set(AMN_NETD_PATH ${CMAKE_INSTALL_FULL_SBINDIR}/amaters-netd)
  configure_file(${CMAKE_SOURCE_DIR}/dist/systemd/amaters-netd.service.in ${CMAKE_BINARY_DIR}/amaters-netd.service @ONLY)
  install(FILES ${CMAKE_BINARY_DIR}/amaters-netd.service ${CMAKE_SOURCE_DIR}/dist/systemd/amaters-netd.socket
          DESTINATION ${AMN_SYSTEMD_UNITDIR})
endif()
