# SPDX-License-Identifier: MIT OR Apache-2.0
# cmake -DIN=FILE -DOUT=FILE.c -DNAME=symbol -P embed_bytes.cmake
# Writes FILE's bytes as `const unsigned char NAME[]` and `const size_t NAME_len`
# (the server's reflection embeds the serialized FileDescriptorSet this way).
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" n)
math(EXPR bytes "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){16})" "\\1\n  " body "${body}")
file(WRITE "${OUT}" "/* generated from ${NAME}'s descriptor set by cmake/embed_bytes.cmake: do not edit */\n"
  "#include <stddef.h>\n"
  "const unsigned char ${NAME}[] = {\n  ${body}0};\n"
  "const size_t ${NAME}_len = ${bytes};\n")
