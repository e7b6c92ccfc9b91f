# Cross-compiling for 32-bit ARM gateways with a hardware FPU (Debian armhf,
# e.g. Raspberry Pi OS 32-bit) with Debian's cross compiler and multiarch
# libraries. See deploy/README.md, "Cross-compiling":
#   dpkg --add-architecture armhf && apt-get update
#   apt-get install gcc-arm-linux-gnueabihf libmsgpack-dev:armhf libopenblas-dev:armhf \
#       libpaho-mqtt-dev:armhf libssl-dev:armhf
#   cmake -S . -B build-armhf -DCMAKE_TOOLCHAIN_FILE=deploy/cmake/arm-linux-gnueabihf.cmake -DESGD_BUILD_TESTS=OFF
#   cmake --build build-armhf --target esgd-agent
set(ESGD_CROSS_TRIPLET arm-linux-gnueabihf)
set(ESGD_DEB_ARCH armhf) # the .deb architecture (cmake/packaging.cmake)
set(CMAKE_SYSTEM_PROCESSOR arm)
include(${CMAKE_CURRENT_LIST_DIR}/debian-multiarch.cmake)
