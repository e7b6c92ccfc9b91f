# Cross-compiling for 64-bit ARM gateways (Debian arm64) with Debian's cross
# compiler and multiarch libraries. See deploy/README.md, "Cross-compiling":
#   dpkg --add-architecture arm64 && apt-get update
#   apt-get install gcc-aarch64-linux-gnu libmsgpack-dev:arm64 libopenblas-dev:arm64 \
#       libpaho-mqtt-dev:arm64 libssl-dev:arm64 libsodium-dev:arm64 libmicrohttpd-dev:arm64
# (scripts/arm-check.sh does all of it, with the unit tests under qemu-user-static)
#   cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=deploy/cmake/aarch64-linux-gnu.cmake -DESGD_BUILD_TESTS=OFF
#   cmake --build build-arm64 --target esgd-agent
set(ESGD_CROSS_TRIPLET aarch64-linux-gnu)
set(ESGD_DEB_ARCH arm64) # the .deb architecture (cmake/packaging.cmake)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
include(${CMAKE_CURRENT_LIST_DIR}/debian-multiarch.cmake)
