# Install rules beyond the agent's and the coordinator's own, and the CPack
# setup for one Debian package, "esgd":
#   /usr/bin/esgd-agent, esgd-coordinator, esgd-watch, esgd-sim, esgd-keygen
#   /usr/lib/systemd/system/esgd-agent.service, esgd-coordinator.service
#   /usr/lib/sysusers.d/esgd.conf          the esgd system user
#   /usr/share/doc/esgd/examples/          agent.env, coordinator.env, mosquitto.conf
#   /usr/share/esgd/make-credentials.sh    passwords, ACL and a test CA for a job
# Build it with: cmake --build BUILD && (cd BUILD && cpack -G DEB)
# Included at the end of the top-level CMakeLists.txt (targets are global by then).

foreach(tool IN ITEMS esgd-watch esgd-sim esgd-keygen)
  if(TARGET ${tool})
    install(TARGETS ${tool} RUNTIME DESTINATION bin)
  endif()
endforeach()

set(ESGD_DEPLOY_DIR ${PROJECT_SOURCE_DIR}/deploy)
# Relative destinations land under CPACK_PACKAGING_INSTALL_PREFIX (/usr).
install(FILES ${ESGD_DEPLOY_DIR}/systemd/esgd-agent.service ${ESGD_DEPLOY_DIR}/systemd/esgd-coordinator.service
        DESTINATION lib/systemd/system)
install(FILES ${ESGD_DEPLOY_DIR}/systemd/esgd.sysusers.conf DESTINATION lib/sysusers.d RENAME esgd.conf)
install(FILES ${ESGD_DEPLOY_DIR}/systemd/agent.env.example ${ESGD_DEPLOY_DIR}/systemd/coordinator.env.example
              ${ESGD_DEPLOY_DIR}/mosquitto/mosquitto.conf
        DESTINATION share/doc/esgd/examples)
install(PROGRAMS ${ESGD_DEPLOY_DIR}/make-credentials.sh DESTINATION share/esgd)
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${PROJECT_SOURCE_DIR}/schemas/messages.md DESTINATION share/doc/esgd)
install(FILES ${ESGD_DEPLOY_DIR}/README.md DESTINATION share/doc/esgd RENAME README.deploy.md)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME esgd)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "esgd-mqtt")
set(CPACK_PACKAGE_CONTACT "esgd maintainers <esgd@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "eSGD over MQTT: sparse distributed training for IoT edge gateways")
set(CPACK_PACKAGE_DESCRIPTION "Edge agents train a small network on local data and send only the \
gradient coordinates chosen by the eSGD rule over MQTT; a coordinator aggregates them and publishes the model. \
Contains esgd-agent, esgd-coordinator, esgd-watch, esgd-sim, hardened systemd units and broker configuration examples.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# adduser for postinst. The runtime libraries: dpkg-shlibdeps reads them
# from the binaries, with versions (also for a cross build when the
# target's multiarch libraries are installed); without it, Debian 12's names.
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
find_program(ESGD_DPKG_SHLIBDEPS dpkg-shlibdeps)
if(ESGD_DPKG_SHLIBDEPS)
  set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
else()
  string(APPEND CPACK_DEBIAN_PACKAGE_DEPENDS ", libc6, libpaho-mqtt1.3, libmsgpackc2, libssl3, libmicrohttpd12, libsodium23,"
         " libopenblas0 | libopenblas0-pthread | libopenblas0-openmp | libopenblas0-serial")
endif()
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "ca-certificates")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "mosquitto, mosquitto-clients, openssl, prometheus")
# The toolchain files in deploy/cmake/ set the Debian architecture of a cross build.
if(ESGD_DEB_ARCH)
  set(CPACK_DEBIAN_PACKAGE_ARCHITECTURE ${ESGD_DEB_ARCH})
endif()
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${ESGD_DEPLOY_DIR}/package/postinst ${ESGD_DEPLOY_DIR}/package/prerm ${ESGD_DEPLOY_DIR}/package/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_STRIP_FILES ON)

include(CPack)
