# Cross-compiling for 32-bit ARM gateways with a hardware FPU (Debian armhf,
# e.g. Raspberry Pi OS 32-bit) with Debian's cross compiler and multiarch
# libraries. See deploy/README.md, "Cross-compiling":
#   dpkg --add-architecture armhf && apt-get update
#   apt-get install gcc-arm-linux-gnueabihf libmsgpack-dev:armhf libopenblas-dev:armhf \
#       libpaho-mqtt-dev:armhf libssl-dev:armhf libsodium-dev:armhf libmicrohttpd-dev:armhf
# (scripts/arm-check.sh does all of it, with the unit tests under qemu-user-static)
#   cmake -S . -B build-armhf -DCMAKE_TOOLCHAIN_FILE=deploy/cmake/arm-linux-gnueabihf.cmake -DESGD_BUILD_TESTS=OFF
#   cmake --build build-armhf --target esgd-agent
set(ESGD_CROSS_TRIPLET arm-linux-gnueabihf)
set(ESGD_DEB_ARCH armhf) # the .deb architecture (cmake/packaging.cmake)
set(CMAKE_SYSTEM_PROCESSOR arm)
# IEEE half precision, so _Float16 exists as on arm64 and x86-64 (GCC 12):
# test_codec checks the f16 codec against the compiler's own conversion.
set(CMAKE_C_FLAGS_INIT -mfp16-format=ieee)
include(${CMAKE_CURRENT_LIST_DIR}/debian-multiarch.cmake)
