# A plain-C++ folder (base/, data/, calib/, intsim/, search/) configured on its own, e.g.
#   cmake -S src/anybit/intsim -B build-intsim && cmake --build build-intsim -j2 && ctest --test-dir build-intsim
# after its own cmake_minimum_required() and project() (CMake wants those written in the
# folder's CMakeLists.txt): the project's language settings, and its tests built.
include(${CMAKE_CURRENT_LIST_DIR}/anybit_defaults.cmake)
enable_testing()
set(ANYBIT_BUILD_TESTS ON)
find_package(GTest REQUIRED)
include(GoogleTest)
